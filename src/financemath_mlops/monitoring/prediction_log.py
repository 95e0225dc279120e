"""The service's append-only prediction log: Parquet part files written by a background thread.

Why this shape: a request must never wait for a disk, so :meth:`PredictionLog.record` only puts
the entry on a bounded in-memory queue (``put_nowait``); when the queue is full the entry is
dropped and counted, never blocking. One writer thread turns batches of entries into one Parquet
file each (every ``rotate_rows`` entries or ``rotate_seconds`` after the oldest unwritten one, and
on :meth:`~PredictionLog.close`), written to a hidden temp file, fsynced and renamed, so a crash
never leaves a torn file behind and readers only ever see complete files. File names sort by time
and are unique per process (``predictions-<utc>-<pid>-<seq>.parquet``), so several uvicorn
workers can share one directory. A write that fails (unwritable directory, full disk) never
raises into the service: the rows stay in memory (at most ``max_queue`` of them; beyond that new
ones are dropped and counted, reason ``write_error``), ``write_errors`` counts every failed write,
:attr:`PredictionLog.durable` turns False (the listener hears it at once: the service's
``fmops_prediction_log_durable`` gauge) and the writer tries again every flush interval, writing
what it holds as one part file as soon as the disk takes it. A kill -9 while ``durable`` is False
loses the rows held in memory: that is what the gauge and its alert warn about.

Between part files the writer appends each entry to a hidden per-process journal
(``.journal-<pid>-<token>.jsonl``; feature rows as base64 float64, a tenth of the CPU of JSON
numbers on a thread that shares the GIL with the event loop) and hands it to the OS at least
every ``flush_seconds``, so a kill -9 loses at most that window (plus entries still on the
queue); the next log opened on the directory turns the journals of dead processes into part
files (a journal it cannot write out stays for the next start). ``flush_seconds=0`` turns the
journal off (a kill then loses everything not yet in a part file). A journal write that fails
(full disk) is one write error and makes the log not durable until a part file holds the rows.

Only the fields in :data:`ENTRY_FIELDS` and the feature values are stored: whatever else a caller
puts in an entry (headers, API keys) is ignored by construction.

The writer is fastparquet (the serving install carries no pyarrow: ~10 MB instead of ~156 MB);
fastparquet writes no nested columns, so ``warnings`` is stored as JSON text. The embedding values
of a row are stored as one binary column (:data:`PACKED_COLUMN`: little-endian float64, the packed
names in the file's key-value metadata :data:`PACKED_KEY`), not 384 float columns: fastparquet
spends about 1 ms of Python per column, so a 423-column part file held the GIL for 0.3 s on the
thread that shares it with the event loop (issue 32's tail); 40 columns take 0.06 s. The reader
(:func:`read_prediction_log`, monitoring side, pyarrow) unpacks it into the same float columns,
turns ``warnings`` back into a list and reads part files of every writer alike.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import math
import os
import queue
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from financemath_mlops.atomic import pid_alive
from financemath_mlops.features.rows import FEATURE_COLUMNS, N_HAND_FEATURES

if TYPE_CHECKING:
    from financemath_mlops.config import MonitoringSettings

log = logging.getLogger(__name__)

FILE_PREFIX = "predictions-"
FILE_SUFFIX = ".parquet"
JOURNAL_PREFIX = ".journal-"
JOURNAL_FEATURES = "features_f8"  # a journal line's feature row: base64 of little-endian float64
PACKED_COLUMN = "embedding_f8"  # a part file's embedding values: bytes of little-endian float64
PACKED_KEY = "fmops.packed_columns"  # the file metadata naming PACKED_COLUMN's values, in order
PACKED_FEATURES = frozenset(FEATURE_COLUMNS[N_HAND_FEATURES:])  # the embedding columns
_JOURNAL_PID = re.compile(r"^\.journal-(\d+)-[0-9a-f]+\.jsonl$")
TEXT_FIELDS = (
    "request_id", "client_request_id", "model_name", "model_version", "model_alias",
    "model_run_id", "topic",
)  # fmt: skip
ENTRY_FIELDS = (
    "request_id", "client_request_id", "item", "timestamp", "model_name", "model_version",
    "model_alias", "model_run_id", "topic", "prediction", "warnings",
)  # fmt: skip
MAX_WARNINGS = 20
MAX_TEXT = 500
WARN_EVERY_S = 60.0

_sequence = itertools.count()  # part-file numbers, unique across every log of this process
_sequence_lock = threading.Lock()


class LogListener(Protocol):
    """Receives the log's counts as they happen (e.g. to increment Prometheus counters)."""

    def written(self, rows: int) -> None: ...

    def dropped(self, rows: int, reason: str) -> None: ...

    def write_error(self) -> None: ...

    def durable(self, durable: bool) -> None: ...


def logged_columns(features: str) -> tuple[str, ...]:
    """Feature columns stored per prediction: ``all``, ``hand`` (no embeddings) or ``none``."""
    if features == "all":
        return FEATURE_COLUMNS
    if features == "hand":
        return FEATURE_COLUMNS[:N_HAND_FEATURES]
    if features == "none":
        return ()
    raise ValueError(f"features must be 'all', 'hand' or 'none', got {features!r}")


def log_schema(feature_columns: Sequence[str]) -> Any:
    """The pyarrow schema the reader returns (pyarrow is imported here: monitoring side only)."""
    import pyarrow as pa

    text = pa.string()
    return pa.schema(
        [
            pa.field("request_id", text),
            pa.field("client_request_id", text),  # the caller's X-Request-ID, beside ours
            pa.field("item", pa.int32()),
            pa.field("timestamp", pa.timestamp("us", tz="UTC")),
            pa.field("model_name", text),
            pa.field("model_version", text),
            pa.field("model_alias", text),
            pa.field("model_run_id", text),
            pa.field("topic", text),
            pa.field("prediction", pa.float64()),
            pa.field("warnings", pa.list_(text)),
            *(pa.field(name, pa.float64()) for name in feature_columns),
        ]
    )


def prediction_entries(
    request_id: str,
    model: Mapping[str, Any],
    predictions: Sequence[float | None],
    warnings: Sequence[Sequence[str]] | None = None,
    features: Any = None,
    topics: Sequence[str | None] | None = None,
    client_request_id: str | None = None,
) -> list[dict[str, Any]]:
    """Entries for one request (one per record), from what the service already has at hand.

    ``model`` is the served model's identity (``name``, ``version``, ``alias``, ``run_id``);
    ``features`` the request's feature matrix in ``FEATURE_COLUMNS`` order (or None). Cheap: the
    conversion to columns happens on the writer thread.
    """
    now = time.time()
    entries = []
    for i, value in enumerate(predictions):
        entries.append(
            {
                "request_id": request_id,
                "client_request_id": client_request_id,
                "item": i,
                "timestamp": now,
                "model_name": model.get("name"),
                "model_version": model.get("version"),
                "model_alias": model.get("alias"),
                "model_run_id": model.get("run_id"),
                "topic": topics[i] if topics is not None else None,
                "prediction": value,
                "warnings": list(warnings[i]) if warnings is not None else [],
                "features": features[i] if features is not None else None,
            }
        )
    return entries


@dataclass
class _FlushRequest:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class PredictionLog:
    """Append-only prediction log; see the module docstring for the guarantees.

    ``written``, ``dropped`` (by reason in ``dropped_by_reason``: ``queue_full``, ``write_error``,
    ``closed``) and ``write_errors`` count what happened, ``durable`` says whether the rows taken
    so far are safe from a kill -9 (``last_error`` why not); a ``listener`` hears the same as it
    happens. With ``enabled=False`` nothing is started and :meth:`record` is a no-op.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        max_queue: int = 10_000,
        rotate_rows: int = 1_000,
        rotate_seconds: float = 60.0,
        flush_seconds: float = 1.0,
        features: str = "all",
        enabled: bool = True,
        listener: LogListener | None = None,
    ) -> None:
        if max_queue < 1 or rotate_rows < 1 or not rotate_seconds > 0 or flush_seconds < 0:
            raise ValueError(
                "max_queue and rotate_rows must be >= 1, rotate_seconds > 0, flush_seconds >= 0"
            )
        self.directory = Path(directory)
        self.rotate_rows = rotate_rows
        self.rotate_seconds = float(rotate_seconds)
        self.flush_seconds = float(flush_seconds)
        self._journal: Any = None
        self._journal_path = (
            self.directory / f"{JOURNAL_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        )
        self._unflushed_since: float | None = None
        self._journal_gap = False  # some row held is not in the journal (its write failed)
        # While writes fail: retry this often (the flush interval: the journal's own promise),
        # holding at most this many rows in memory.
        self.retry_seconds = max(self.flush_seconds or min(self.rotate_seconds, 1.0), 0.1)
        self.max_pending = max(max_queue, rotate_rows)
        self._retry_at = 0.0
        self.durable = True  # False from a failed write until a part file holds the rows
        self.last_error: str | None = None
        self._last_exc: Exception | None = None
        self.pending = 0  # rows taken by the writer, not yet in a part file
        self.feature_columns = logged_columns(features)
        self.packed_columns = [n for n in self.feature_columns if n in PACKED_FEATURES]
        self._plain_columns = [n for n in self.feature_columns if n not in PACKED_FEATURES]
        self._packed = np.isin(self.feature_columns, self.packed_columns)  # fixed per log
        self.enabled = enabled
        self.listener = listener
        self.written = 0
        self.write_errors = 0
        self.dropped_by_reason: dict[str, int] = {}
        self._counts = threading.Lock()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self._accepting = enabled
        self._last_warning: dict[str, float] = {}
        self._thread: threading.Thread | None = None
        if enabled:
            self._thread = threading.Thread(
                target=self._run, name="fmops-prediction-log", daemon=True
            )
            self._thread.start()

    @classmethod
    def configured(
        cls, monitoring: MonitoringSettings, directory: Path, listener: LogListener | None = None
    ) -> PredictionLog:
        """The log the ``monitoring`` section configures (``FMOPS_MONITORING__*``), in
        ``directory`` (``paths.predictions_dir``)."""
        return cls(
            directory,
            max_queue=monitoring.log_queue_size,
            rotate_rows=monitoring.log_rotate_rows,
            rotate_seconds=monitoring.log_rotate_seconds,
            flush_seconds=monitoring.log_flush_interval_s,
            features=monitoring.log_features,
            enabled=monitoring.prediction_log,
            listener=listener,
        )

    @property
    def dropped(self) -> int:
        with self._counts:
            return sum(self.dropped_by_reason.values())

    @property
    def wants_features(self) -> bool:
        """Whether the caller should compute and pass feature rows (``keep_features``)."""
        return self.enabled and bool(self.feature_columns)

    def record(self, entry: Mapping[str, Any]) -> bool:
        """Queue one entry without blocking; False (and counted) if it had to be dropped."""
        if not self.enabled:
            return False
        if not self._accepting:
            self._drop(1, "closed")
            return False
        if "timestamp" not in entry:
            entry = {**entry, "timestamp": time.time()}
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self._drop(1, "queue_full")
            return False
        return True

    def record_many(self, entries: Iterable[Mapping[str, Any]]) -> int:
        """Queue several entries; returns how many were accepted."""
        return sum(self.record(entry) for entry in entries)

    def flush(self, timeout: float = 10.0) -> bool:
        """Write everything queued so far; True when done within ``timeout`` seconds."""
        if self._thread is None or not self._thread.is_alive():
            return False
        request = _FlushRequest()
        try:
            self._queue.put(request, timeout=timeout)
        except queue.Full:
            return False
        return request.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop accepting entries, write what is queued, stop the writer (idempotent)."""
        self._accepting = False
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("prediction log: writer did not drain the queue within %.0fs", timeout)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("prediction log: writer still busy after %.0fs; giving up", timeout)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        # The part-file writer's modules, imported now (at start, before requests come) rather
        # than inside the first part file: that import held the GIL for 1-2 s on 2 loaded cores
        # and stalled every request in flight (issue 32's tail profile).
        import fastparquet  # noqa: F401
        import pandas  # noqa: F401

        self._recover_journals()
        buffer: list[Mapping[str, Any]] = []
        oldest = 0.0
        while True:
            try:
                item = self._queue.get(timeout=self._wait(buffer, oldest))
            except queue.Empty:
                item = None
            if item is _STOP:
                while True:  # entries queued by a record() that raced with close()
                    try:
                        late = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(late, _FlushRequest):
                        late.done.set()
                    elif late is not _STOP:
                        buffer.append(late)
                self._finish(buffer)
                return
            if isinstance(item, _FlushRequest):
                buffer = self._flush(buffer)
                item.done.set()
            elif item is not None:
                if not buffer:
                    oldest = time.monotonic()
                if not self.durable and len(buffer) >= self.max_pending:
                    self._drop(1, "write_error")  # the disk refuses and memory is bounded
                else:
                    buffer.append(item)
                    self._journal_entry(item)
                    if self.durable and len(buffer) >= self.rotate_rows:
                        buffer = self._flush(buffer)
            # Timed work, also under a steady stream of entries (a get() that never times out).
            now = time.monotonic()
            if (
                self._unflushed_since is not None
                and now >= self._unflushed_since + self.flush_seconds
            ):
                self._sync_journal()
            if buffer and now >= self._due(oldest):
                buffer = self._flush(buffer)
            self.pending = len(buffer)

    def _due(self, oldest: float) -> float:
        """When the rows held must be written: their age limit, or the next retry after a failure."""
        return self._retry_at if not self.durable else oldest + self.rotate_seconds

    def _wait(self, buffer: list[Mapping[str, Any]], oldest: float) -> float | None:
        deadlines = [self._due(oldest)] if buffer else []
        if self._unflushed_since is not None:
            deadlines.append(self._unflushed_since + self.flush_seconds)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _finish(self, buffer: list[Mapping[str, Any]]) -> None:
        """On close: write what is held; if the disk still refuses, a complete journal stays for
        the next start (nothing lost), else the rows are counted as dropped."""
        buffer = self._flush(buffer)
        self.pending = len(buffer)
        if buffer and self._journal is not None and not self._journal_gap:
            try:
                self._journal.close()
            except Exception as exc:
                self._journal_failed(exc)
            else:
                self._journal = None
                log.warning(
                    "prediction log: %d entries could not be written; they stay in %s, which "
                    "the next start writes out",
                    len(buffer),
                    self._journal_path,
                )
                return
        if buffer:
            self._drop(len(buffer), "write_error", error=self._last_exc)
        self._close_journal()

    # --- the journal: what a kill -9 would otherwise take with it ------------------------------

    def _journal_entry(self, entry: Mapping[str, Any]) -> None:
        if not self.flush_seconds or self._journal_gap:
            return  # a gap: these rows are in memory only until a part file holds them
        try:
            if self._journal is None:
                self.directory.mkdir(parents=True, exist_ok=True)
                self._journal = self._journal_path.open("a", encoding="utf-8")
            row = {name: entry.get(name) for name in ENTRY_FIELDS}
            row["timestamp"] = _timestamp(entry.get("timestamp")).timestamp()
            row["warnings"] = [str(w)[:MAX_TEXT] for w in (entry.get("warnings") or ())]
            if self.feature_columns:
                values = self._feature_row(entry.get("features")).astype("<f8", copy=False)
                row[JOURNAL_FEATURES] = base64.b64encode(values.tobytes()).decode("ascii")
            self._journal.write(json.dumps(row, default=str) + "\n")
        except Exception as exc:  # the journal is a safety net: never lose the entry over it
            self._journal_failed(exc)
            return
        if self._unflushed_since is None:
            self._unflushed_since = time.monotonic()

    def _sync_journal(self) -> None:
        """Hand the journal to the OS: a killed process keeps it, only a power cut does not."""
        if self._journal is not None and self._unflushed_since is not None:
            try:
                self._journal.flush()
            except Exception as exc:
                self._journal_failed(exc)
        self._unflushed_since = None

    def _reset_journal(self) -> None:
        """Everything journaled is in a part file now: empty the journal (a broken one is
        removed, and the next entry starts a new one)."""
        try:
            if self._journal is not None and not self._journal_gap:
                self._journal.seek(0)
                self._journal.truncate()
            else:
                self._discard_journal()
                self._journal_path.unlink(missing_ok=True)
                self._journal_gap = False
        except Exception as exc:
            self._journal_failed(exc)
        self._unflushed_since = None

    def _discard_journal(self) -> None:
        handle, self._journal = self._journal, None
        if handle is not None:
            with contextlib.suppress(Exception):  # its buffer may not reach the disk: a gap
                handle.close()

    def _close_journal(self) -> None:
        try:
            if self._journal is not None:
                self._journal.close()
            self._journal_path.unlink(missing_ok=True)
        except Exception as exc:
            self._journal_failed(exc)
        self._journal = None

    def _journal_failed(self, exc: Exception) -> None:
        """The journal no longer covers every row held: stop journaling (the rows journaled so
        far stay on disk for a kill -9) until a part file holds them all."""
        self._journal_gap = True
        self._discard_journal()
        self._unflushed_since = None
        self._write_failed(f"journal {self._journal_path}", exc)

    def _write_failed(self, what: str, exc: Exception) -> None:
        """One failed write: counted, the log not durable, a retry within one flush interval."""
        with self._counts:
            self.write_errors += 1
        self._last_exc = exc
        self.last_error = f"{what}: {type(exc).__name__}: {exc}"[:MAX_TEXT]
        self._retry_at = time.monotonic() + self.retry_seconds
        if self.listener is not None:
            self.listener.write_error()
        if self.durable:
            self.durable = False
            if self.listener is not None:
                self.listener.durable(False)
        self._warn(
            f"prediction log cannot make rows durable ({self.last_error}); the rows stay in "
            f"memory (at most {self.max_pending}) and the writer retries every "
            f"{self.retry_seconds:g}s; a kill -9 now would lose them",
            kind="durable",
        )

    def _recover_journals(self) -> None:
        """Part files from the journals of processes that died (kill -9, OOM) before rotating."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"{JOURNAL_PREFIX}*.jsonl")):
            match = _JOURNAL_PID.match(path.name)
            if (
                match is None
                or int(match.group(1)) == os.getpid()
                or pid_alive(int(match.group(1)))
            ):
                continue
            recovered = []
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        recovered.append(self._from_journal(json.loads(line)))
                    except (json.JSONDecodeError, AttributeError):
                        continue  # the line being written when the process died
            if recovered:
                try:  # one part file per journal: written whole or not at all
                    self._write(self._table(recovered))
                except Exception as exc:  # counted, durable stays (the rows are on disk); the
                    # writer thread must survive anything, or later rows are dropped unseen
                    with self._counts:
                        self.write_errors += 1
                    if self.listener is not None:
                        self.listener.write_error()
                    log.warning(
                        "prediction log: could not write out %s (%s: %s); it stays for the "
                        "next start",
                        path,
                        type(exc).__name__,
                        exc,
                    )
                    continue
                with self._counts:
                    self.written += len(recovered)
                if self.listener is not None:
                    self.listener.written(len(recovered))
            log.info("prediction log: recovered %d entries from %s", len(recovered), path)
            path.unlink(missing_ok=True)

    def _from_journal(self, row: dict[str, Any]) -> dict[str, Any]:
        """A journal line back as an entry (feature rows of another width are logged missing)."""
        encoded = row.pop(JOURNAL_FEATURES, None)
        if isinstance(encoded, str):
            try:
                row["features"] = np.frombuffer(base64.b64decode(encoded, validate=True), "<f8")
            except ValueError:  # binascii.Error (bad base64) and a length not of 8 bytes
                row["features"] = None
        return row

    def _flush(self, buffer: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Write the rows held as one part file; returns what is still held (all on failure).

        A disk that refuses (``OSError``) keeps the rows for the next try; rows that cannot be
        turned into a table at all (a bug, not the disk) are dropped and counted.
        """
        if not buffer:
            return []
        try:
            table = self._table(buffer)
        except Exception as exc:  # the writer thread must survive anything
            self._drop(len(buffer), "write_error", error=exc)
            self._reset_journal()
            return []
        try:
            self._write(table)
        except Exception as exc:  # a full disk, or anything else: held, retried, counted
            self._write_failed(f"part file in {self.directory}", exc)
            return buffer
        self._reset_journal()
        with self._counts:
            self.written += len(buffer)
        if self.listener is not None:
            self.listener.written(len(buffer))
        if not self.durable and not self._journal_gap:
            self.durable = True
            self.last_error = None
            log.info("prediction log: durable again (%d held rows written)", len(buffer))
            if self.listener is not None:
                self.listener.durable(True)
        return []

    def _write(self, table: Any) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        with _sequence_lock:
            number = next(_sequence)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = self.directory / f"{FILE_PREFIX}{stamp}-{os.getpid()}-{number:06d}{FILE_SUFFIX}"
        tmp = self.directory / f".{target.name}.tmp"
        try:
            write_parquet(table, tmp, packed=self.packed_columns)
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def _table(self, entries: list[Mapping[str, Any]]) -> Any:
        """The part file's rows as a DataFrame, columns in :data:`ENTRY_FIELDS` order."""
        import pandas as pd

        def text(name: str) -> pd.Series:
            return pd.Series([_text(e.get(name)) for e in entries], dtype=object)

        columns: dict[str, Any] = {
            "request_id": text("request_id"),
            "client_request_id": text("client_request_id"),
            "item": np.array([int(e.get("item") or 0) for e in entries], dtype=np.int32),
            "timestamp": pd.DatetimeIndex(
                [_timestamp(e.get("timestamp")) for e in entries]
            ).as_unit("us"),
            **{
                name: text(name)
                for name in ("model_name", "model_version", "model_alias", "model_run_id", "topic")
            },
            "prediction": np.array(
                [_number(e.get("prediction")) for e in entries], dtype=np.float64
            ),
            "warnings": pd.Series(
                [
                    [str(w)[:MAX_TEXT] for w in (e.get("warnings") or ())][:MAX_WARNINGS]
                    for e in entries
                ],
                dtype=object,
            ),
        }
        frame = pd.DataFrame(columns)
        if not self.feature_columns:
            return frame
        matrix = np.vstack([self._feature_row(e.get("features")) for e in entries])
        # One float block for the plain features: columns one by one cost seconds per part file.
        parts = [frame, pd.DataFrame(matrix[:, ~self._packed], columns=self._plain_columns)]
        if self.packed_columns:
            values = np.ascontiguousarray(matrix[:, self._packed], dtype="<f8")
            rows = pd.Series([row.tobytes() for row in values], dtype=object, name=PACKED_COLUMN)
            parts.append(rows.to_frame())
        return pd.concat(parts, axis=1)

    def _feature_row(self, values: Any) -> np.ndarray:
        width = len(self.feature_columns)
        if values is None:
            return np.full(width, np.nan)
        if isinstance(values, Mapping):
            return np.array([_number(values.get(n)) for n in self.feature_columns], dtype=float)
        row = np.asarray(values, dtype=np.float64).reshape(-1)
        if row.size >= width:  # a full row in FEATURE_COLUMNS order: keep the logged prefix
            return row[:width]
        self._warn(f"a feature row has {row.size} values, expected {width}; logged as missing")
        return np.full(width, np.nan)

    def _drop(self, rows: int, reason: str, error: Exception | None = None) -> None:
        with self._counts:
            self.dropped_by_reason[reason] = self.dropped_by_reason.get(reason, 0) + rows
            total = sum(self.dropped_by_reason.values())
        if self.listener is not None:
            self.listener.dropped(rows, reason)
        detail = f": {type(error).__name__}: {error}" if error is not None else ""
        self._warn(
            f"prediction log dropped {rows} entries ({reason}{detail}); "
            f"{total} dropped so far, directory {self.directory}"
        )

    def _warn(self, message: str, kind: str = "drop") -> None:
        """A warning of each kind at most once a minute: a full disk must not flood the log."""
        now = time.monotonic()
        if now - self._last_warning.get(kind, -math.inf) >= WARN_EVERY_S:
            self._last_warning[kind] = now
            log.warning("%s", message)


def write_parquet(frame: Any, path: Path, packed: Sequence[str] = ()) -> None:
    """One part file (zstd) with fastparquet: text columns UTF-8, ``warnings`` JSON text, the
    embedding values ``packed`` (their names, in order) in :data:`PACKED_COLUMN` as bytes."""
    import fastparquet

    encoding = {**dict.fromkeys(TEXT_FIELDS, "utf8"), "warnings": "json"}
    if packed:
        encoding[PACKED_COLUMN] = "bytes"
    fastparquet.write(
        str(path),
        frame,
        compression="ZSTD",
        write_index=False,
        object_encoding=encoding,
        times="int64",
        stats=["timestamp"],  # min/max where the readers filter; per-column stats cost seconds
        custom_metadata={PACKED_KEY: json.dumps(list(packed))} if packed else None,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:MAX_TEXT]


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and math.isfinite(value):
        return datetime.fromtimestamp(float(value), UTC)
    return datetime.now(UTC)


def _normalised(table: Any) -> Any:
    """A part file as :func:`log_schema` says, whichever writer made it (pyarrow before the
    lean serving install, fastparquet since: JSON ``warnings``, its own timestamp unit)."""
    import pyarrow as pa

    packed = json.loads((table.schema.metadata or {}).get(PACKED_KEY.encode(), b"[]"))
    table = table.replace_schema_metadata(None)  # a writer's pandas metadata must not steer us
    if PACKED_COLUMN in table.column_names:
        table = _unpacked(table, packed)
    names = table.column_names
    base = {field.name: field for field in log_schema(())}
    for name in ("warnings", "timestamp", "item"):
        if name not in names:
            continue
        i = names.index(name)
        column = table.column(i)
        if name == "warnings" and not pa.types.is_list(column.type):
            lists = [None if v is None else json.loads(v) for v in column.to_pylist()]
            column = pa.array(lists, type=base[name].type)
        elif column.type != base[name].type:
            column = column.cast(base[name].type)
        table = table.set_column(i, base[name], column)
    return table


def _unpacked(table: Any, names: Sequence[str]) -> Any:
    """The packed embedding column back as one float64 column per name (a row whose bytes are
    missing or of another width reads as missing values)."""
    import pyarrow as pa

    width = len(names)
    missing = np.full(width, np.nan).tobytes()
    blobs = table.column(PACKED_COLUMN).to_pylist()
    raw = b"".join(b if isinstance(b, bytes) and len(b) == width * 8 else missing for b in blobs)
    matrix = np.frombuffer(raw, dtype="<f8").reshape(len(blobs), width)
    table = table.drop_columns([PACKED_COLUMN])
    for i, name in enumerate(names):
        table = table.append_column(pa.field(name, pa.float64()), pa.array(matrix[:, i]))
    return table


def log_files(directory: Path | str) -> list[Path]:
    """Complete part files, oldest first (temp files are hidden and never listed)."""
    return sorted(Path(directory).glob(f"{FILE_PREFIX}*{FILE_SUFFIX}"))


def read_prediction_log(
    directory: Path | str,
    since: datetime | None = None,
    until: datetime | None = None,
    columns: Sequence[str] | None = None,
) -> Any:
    """Every logged prediction with ``since <= timestamp < until`` as a DataFrame, oldest first.

    Files written with other feature settings are combined (missing columns are null). An
    unreadable file is skipped with a warning. No files: an empty frame with the base columns.
    ``columns`` keeps those (and the sort keys) once a file is read: the embedding values are
    one packed column on disk, so a file is always read whole.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    filters = []
    if since is not None:
        filters.append(("timestamp", ">=", pd.Timestamp(_timestamp(since))))
    if until is not None:
        filters.append(("timestamp", "<", pd.Timestamp(_timestamp(until))))
    tables = []
    for path in log_files(directory):
        try:
            table = _normalised(pq.read_table(path, filters=filters or None))
            if columns:
                keep = {"timestamp", "request_id", "item", *columns}
                table = table.select([n for n in table.column_names if n in keep])
            tables.append(table)
        except Exception as exc:  # a foreign or damaged file must not hide the others
            log.warning("skipping unreadable prediction log file %s: %s", path, exc)
    if not tables:
        return log_schema(()).empty_table().to_pandas()
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return frame.sort_values(["timestamp", "request_id", "item"], kind="stable").reset_index(
        drop=True
    )
