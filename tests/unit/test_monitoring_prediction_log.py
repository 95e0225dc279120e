"""The prediction log: nothing lost or duplicated across restarts, never an error in the caller."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from financemath_mlops.features.rows import FEATURE_COLUMNS, N_HAND_FEATURES
from financemath_mlops.monitoring import prediction_log as plog
from financemath_mlops.monitoring.prediction_log import (
    PredictionLog,
    log_files,
    prediction_entries,
    read_prediction_log,
)
from financemath_mlops.monitoring.prometheus import PredictionLogMetrics

MODEL = {"name": "financemath-regressor", "version": "3", "alias": "champion", "run_id": "abc"}


def entries(request: int, items: int = 1) -> list[dict]:
    rng = np.random.default_rng(request)
    return prediction_entries(
        f"req-{request}",
        MODEL,
        [float(request) + i / 10 for i in range(items)],
        [["table 0: ragged row"]] * items,
        rng.normal(size=(items, len(FEATURE_COLUMNS))),
        ["Accounting"] * items,
    )


def wait_until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_every_entry_is_read_back_exactly_once_across_a_restart(tmp_path: Path):
    sent = 0
    with PredictionLog(tmp_path, rotate_rows=7) as first:
        for request in range(20):
            first.record_many(entries(request, items=2))
            sent += 2
    second = PredictionLog(tmp_path, rotate_rows=7)  # the service restarted
    for request in range(20, 33):
        second.record_many(entries(request))
        sent += 1
    second.close()

    frame = read_prediction_log(tmp_path)
    assert len(frame) == sent == first.written + second.written
    assert first.dropped == second.dropped == 0
    assert not frame.duplicated(["request_id", "item"]).any()
    assert sorted(set(frame["request_id"])) == sorted(f"req-{i}" for i in range(33))
    assert len(log_files(tmp_path)) >= 2 and not list(tmp_path.glob(".*"))  # no temp files left
    row = frame[frame["request_id"] == "req-5"].iloc[1]
    expected = entries(5, items=2)[1]
    assert row["prediction"] == pytest.approx(5.1)
    assert row["model_version"] == "3" and row["topic"] == "Accounting"
    assert list(row["warnings"]) == ["table 0: ragged row"]
    np.testing.assert_allclose(row[list(FEATURE_COLUMNS)].to_numpy(float), expected["features"])


def test_part_file_names_sort_by_time_and_are_unique_per_process(tmp_path: Path):
    with PredictionLog(tmp_path, rotate_rows=1) as log:
        for request in range(5):
            log.record_many(entries(request))
    names = [p.name for p in log_files(tmp_path)]
    assert len(names) == len(set(names)) == 5
    assert all(name.startswith("predictions-") and name.endswith(".parquet") for name in names)
    stamps = [name.split("-")[1] for name in names]
    assert stamps == sorted(stamps)


def test_an_unwritable_directory_counts_drops_and_never_raises(tmp_path: Path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the log directory should be")
    registry = CollectorRegistry()
    log = PredictionLog(
        blocker / "predictions", rotate_rows=2, listener=PredictionLogMetrics(registry)
    )
    for request in range(5):
        assert log.record_many(entries(request)) == 1  # accepted: the caller never sees the disk
    wait_until(lambda: registry.get_sample_value("fmops_prediction_log_durable") == 0)
    log.close()  # the rows were held in memory; no journal holds them either: dropped, counted
    assert log.written == 0 and not log.durable
    assert log.dropped == log.dropped_by_reason["write_error"] == 5
    assert log.write_errors >= 2  # the journal, then every part-file try
    assert (
        registry.get_sample_value("fmops_prediction_log_dropped_total", {"reason": "write_error"})
        == 5
    )
    assert registry.get_sample_value("fmops_prediction_log_write_errors_total") == log.write_errors
    assert any("prediction log dropped" in r.getMessage() for r in caplog.records)
    assert any("cannot make rows durable" in r.getMessage() for r in caplog.records)


def test_a_disk_full_leaves_no_partial_file_and_the_journal_for_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def full_disk(frame, where, packed=()):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(plog, "write_parquet", full_disk)
    with PredictionLog(tmp_path, rotate_rows=3) as log:
        log.record_many(entries(1, items=3))
    assert log.dropped_by_reason == {} and log.written == 0 and log.write_errors >= 1
    (journal,) = tmp_path.iterdir()  # no part file, no temp file: the complete journal only
    assert journal.name.startswith(".journal-") and len(journal.read_text().splitlines()) == 3


CLOSED_ON_A_FULL_DISK = """
import sys
from financemath_mlops.monitoring import prediction_log as plog
def full_disk(frame, where, packed=()):
    raise OSError(28, "No space left on device")
plog.write_parquet = full_disk
log = plog.PredictionLog(sys.argv[1], rotate_rows=1000, flush_seconds=0.1, features="none")
log.record_many(plog.prediction_entries("req-1", {"name": "m"}, [1.0, 2.0, 3.0]))
log.close()  # SIGTERM's path: the disk still refuses
print(log.written, log.dropped, log.write_errors >= 1)
"""


def test_closed_on_a_full_disk_the_next_start_writes_the_rows(tmp_path: Path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", CLOSED_ON_A_FULL_DISK, str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0", "True"]  # nothing written, nothing dropped
    assert "the next start writes out" in done.stderr
    with PredictionLog(tmp_path, features="none") as restarted:
        restarted.flush()
    assert restarted.written == 3
    assert read_prediction_log(tmp_path)["prediction"].tolist() == [1.0, 2.0, 3.0]
    assert not list(tmp_path.glob(".journal-*"))


class Heard:
    """A listener that keeps what it hears, with the time of each durable change."""

    def __init__(self) -> None:
        self.durable_changes: list[tuple[bool, float]] = []
        self.write_errors = 0

    def written(self, rows: int) -> None: ...

    def dropped(self, rows: int, reason: str) -> None: ...

    def write_error(self) -> None:
        self.write_errors += 1

    def durable(self, durable: bool) -> None:
        self.durable_changes.append((durable, time.monotonic()))


def test_a_journal_on_a_full_device_says_not_durable_within_a_flush_interval(tmp_path: Path):
    """The kernel's own ENOSPC (/dev/full) under the journal: before, one WARNING line and
    nothing on /metrics; now the listener hears it within a flush interval and the held rows
    reach a part file on the next try (the part files' folder takes writes)."""
    heard = Heard()
    log = PredictionLog(
        tmp_path, rotate_rows=1000, rotate_seconds=3600, flush_seconds=0.2, listener=heard
    )
    full = tmp_path / ".journal-on-dev-full"
    full.symlink_to("/dev/full")  # removed (the link only) once the rows are in a part file
    log._journal_path = full
    started = time.monotonic()
    log.record_many(entries(1, items=3))
    wait_until(lambda: heard.durable_changes)
    (became, at) = heard.durable_changes[0]
    assert became is False and at - started < 0.2 + 0.3  # one flush interval (+ scheduling)
    assert heard.write_errors >= 1 and "No space left on device" in (log.last_error or "")
    wait_until(lambda: log.written == 3)  # the retry wrote the held rows as a part file
    wait_until(lambda: len(heard.durable_changes) == 2)  # the flag is set, then the listener told
    assert log.durable and [d for d, _ in heard.durable_changes] == [False, True]
    log.close()
    assert len(read_prediction_log(tmp_path)) == 3 and log.dropped == 0


def test_while_writes_fail_rows_are_held_bounded_then_written(tmp_path: Path, monkeypatch):
    """Held in memory (at most max_queue) and retried every flush interval; past the bound
    dropped and counted; once the disk takes writes again: answered = written + dropped."""
    failing = threading.Event()
    failing.set()
    real = plog.write_parquet

    def maybe_full(frame, where, packed=()):
        if failing.is_set():
            raise OSError(28, "No space left on device")
        real(frame, where, packed)

    monkeypatch.setattr(plog, "write_parquet", maybe_full)
    heard = Heard()
    log = PredictionLog(
        tmp_path, max_queue=4, rotate_rows=2, flush_seconds=0.1, features="none", listener=heard
    )
    for request in range(10):
        log.record_many(entries(request))
        wait_until(lambda: log._queue.qsize() == 0)  # taken by the writer: no queue_full here
    wait_until(lambda: log.dropped == 6)  # 4 held, the rest dropped as they came
    assert log.dropped_by_reason == {"write_error": 6} and log.pending == 4 and not log.durable
    errors = log.write_errors
    wait_until(lambda: log.write_errors > errors)  # it keeps trying: the counter keeps counting
    failing.clear()
    wait_until(lambda: log.durable)
    assert log.written == 4 and log.written + log.dropped == 10
    log.close()
    assert len(read_prediction_log(tmp_path)) == 4 and len(log_files(tmp_path)) == 1


def test_a_write_failing_with_an_error_that_is_not_oserror_keeps_the_writer_alive(
    tmp_path: Path, monkeypatch
):
    """Not only a full disk: any error of the part-file writer (pyarrow's, a MemoryError) holds
    the rows and counts, instead of ending the writer thread, after which every later row would
    be dropped as queue_full while the log still said durable."""
    failing = threading.Event()
    failing.set()
    real = plog.write_parquet

    def broken(frame, where, packed=()):
        if failing.is_set():
            raise ValueError("a writer bug")
        real(frame, where, packed)

    monkeypatch.setattr(plog, "write_parquet", broken)
    log = PredictionLog(tmp_path, rotate_rows=2, flush_seconds=0.1, features="none")
    log.record_many(entries(0, items=2))  # a part file is due: rotate_rows
    wait_until(lambda: log.write_errors > 0 and not log.durable)
    failing.clear()
    wait_until(lambda: log.durable)
    log.record_many(entries(1, items=2))  # the writer is still there to take it
    log.close()
    assert log.dropped == 0 and log.written == 4
    assert len(read_prediction_log(tmp_path)) == log.written


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path, monkeypatch):
    release = threading.Event()
    real_write = PredictionLog._write

    def slow_write(self, table):
        release.wait(10)
        return real_write(self, table)

    monkeypatch.setattr(PredictionLog, "_write", slow_write)
    log = PredictionLog(tmp_path, max_queue=3, rotate_rows=1)
    assert log.record(entries(0)[0])
    wait_until(lambda: log._queue.qsize() == 0)  # the writer holds entry 0, stuck on the disk
    started = time.perf_counter()
    results = [log.record(entries(i)[0]) for i in range(1, 11)]
    assert time.perf_counter() - started < 0.5  # never waits for the disk
    assert results == [True] * 3 + [False] * 7
    assert log.dropped_by_reason == {"queue_full": 7}
    release.set()
    log.close()
    assert log.written == 4 and log.written + log.dropped == 11
    assert len(read_prediction_log(tmp_path)) == 4


def test_rotation_by_age_writes_without_waiting_for_more_rows(tmp_path: Path):
    log = PredictionLog(tmp_path, rotate_rows=1000, rotate_seconds=0.2)
    log.record_many(entries(1))
    wait_until(lambda: len(log_files(tmp_path)) == 1)
    log.close()
    assert log.written == 1 and len(log_files(tmp_path)) == 1


def test_only_known_fields_are_stored(tmp_path: Path):
    entry = {
        **entries(1)[0],
        "headers": {"authorization": "Bearer secret-key"},
        "api_key": "secret-key",
    }
    with PredictionLog(tmp_path, features="hand") as log:
        log.record(entry)
    frame = read_prediction_log(tmp_path)
    assert "api_key" not in frame.columns and "headers" not in frame.columns
    assert list(frame.columns) == [*plog.ENTRY_FIELDS, *FEATURE_COLUMNS[:N_HAND_FEATURES]]
    for path in log_files(tmp_path):
        assert b"secret-key" not in path.read_bytes()


def test_the_time_window_selects_rows(tmp_path: Path):
    now = datetime.now(UTC)
    with PredictionLog(tmp_path) as log:
        for hours in (30, 20, 10, 1):
            entry = entries(hours)[0]
            entry["timestamp"] = now - timedelta(hours=hours)
            log.record(entry)
    window = read_prediction_log(tmp_path, since=now - timedelta(hours=24), until=now)
    assert list(window["request_id"]) == ["req-20", "req-10", "req-1"]
    assert len(read_prediction_log(tmp_path, until=now - timedelta(hours=15))) == 2
    assert read_prediction_log(tmp_path / "nothing-here").empty


def test_a_disabled_log_records_nothing_and_starts_no_thread(tmp_path: Path):
    log = PredictionLog(tmp_path, enabled=False)
    assert not log.record(entries(1)[0]) and not log.wants_features
    assert log._thread is None
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_entries_after_close_are_counted_as_dropped(tmp_path: Path):
    log = PredictionLog(tmp_path)
    log.close()
    assert not log.record(entries(1)[0])
    assert log.dropped_by_reason == {"closed": 1}


def test_settings_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from financemath_mlops.config import ConfigError, load_settings

    monkeypatch.setenv("FMOPS_MONITORING__PREDICTION_LOG", "false")
    monkeypatch.setenv("FMOPS_MONITORING__LOG_FEATURES", "hand")
    settings = load_settings(None, {"paths": {"predictions_dir": tmp_path}})
    log = PredictionLog.configured(settings.monitoring, settings.paths.predictions_dir)
    assert not log.enabled and log.feature_columns == FEATURE_COLUMNS[:N_HAND_FEATURES]
    assert settings.monitoring.log_features == "hand"
    monkeypatch.setenv("FMOPS_MONITORING__LOG_ROTATE_ROWS", "0")
    with pytest.raises(ConfigError, match="FMOPS_MONITORING__LOG_ROTATE_ROWS"):
        load_settings(None, {"paths": {"predictions_dir": tmp_path}})


KILLED_WRITER = """
import os, signal, sys, time
import numpy as np
from financemath_mlops.features.rows import FEATURE_COLUMNS
from financemath_mlops.monitoring.prediction_log import PredictionLog, prediction_entries
directory = sys.argv[1]
log = PredictionLog(directory, rotate_rows=1000, rotate_seconds=3600, flush_seconds=0.2)
rng = np.random.default_rng(0)
model = {"name": "m", "version": "1", "alias": "champion", "run_id": "r"}
for request in range(1511):
    log.record_many(prediction_entries(f"req-{request}", model, [1.0], None,
                                       rng.normal(size=(1, len(FEATURE_COLUMNS))), ["Accounting"]))
while log._queue.qsize():  # the writer has taken every entry
    time.sleep(0.01)
time.sleep(1.0)  # > flush_seconds: the journal reached the OS
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill_9_loses_at_most_the_flush_interval(tmp_path: Path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -9, done.stderr
    assert len(read_prediction_log(tmp_path)) == 1000  # one part file; 511 only journaled
    with PredictionLog(tmp_path) as restarted:  # recovers the dead writer's journal
        restarted.flush()
    frame = read_prediction_log(tmp_path)
    assert len(frame) == 1511 and frame["request_id"].is_unique
    assert not list(tmp_path.glob(".journal-*"))
    # The recovered feature rows are the ones the writer was given, bit for bit (base64 float64).
    written = np.random.default_rng(0).normal(size=(1511, len(FEATURE_COLUMNS)))
    frame = frame.set_index(frame["request_id"].str.removeprefix("req-").astype(int)).sort_index()
    np.testing.assert_array_equal(frame[list(FEATURE_COLUMNS)].to_numpy(), written)


def test_the_clients_request_id_is_stored_beside_ours(tmp_path: Path):
    with PredictionLog(tmp_path, features="none") as log:
        log.record_many(prediction_entries("ours-1", MODEL, [1.0], client_request_id="theirs"))
        log.record_many(prediction_entries("ours-2", MODEL, [2.0]))
    frame = read_prediction_log(tmp_path)
    assert frame["request_id"].tolist() == ["ours-1", "ours-2"]
    assert frame["client_request_id"].tolist() == ["theirs", None]


def test_part_files_of_the_old_pyarrow_writer_read_together_with_fastparquet_ones(tmp_path: Path):
    """Logs written before the lean serving install (pyarrow, nested `warnings`) stay readable
    beside fastparquet's (JSON `warnings`): one frame, same types, by the monitoring reader."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = entries(1)[0]
    pq.write_table(
        pa.table(
            {
                **{name: [old[name]] for name in plog.TEXT_FIELDS},
                "item": [0],
                "timestamp": [datetime(2026, 1, 1, tzinfo=UTC)],
                "prediction": [1.5],
                "warnings": [["an old warning"]],
            },
            schema=plog.log_schema(()),
        ),
        tmp_path / "predictions-20260101T000000000000Z-1-000000.parquet",
    )
    with PredictionLog(tmp_path, features="none") as log:
        log.record_many(entries(2))
    stored = pq.read_schema(log_files(tmp_path)[-1]).field("warnings").type  # JSON text
    assert getattr(stored, "storage_type", stored) == pa.string()
    frame = read_prediction_log(tmp_path)
    assert frame["request_id"].tolist() == ["req-1", "req-2"]
    assert [list(w) for w in frame["warnings"]] == [["an old warning"], ["table 0: ragged row"]]
    assert str(frame["timestamp"].dtype) == "datetime64[us, UTC]"
    assert frame["item"].dtype == np.int32 and frame["prediction"].tolist() == [1.5, 2.0]


def test_embeddings_are_one_packed_column_on_disk_and_read_back_exactly(tmp_path: Path):
    """issue 32: fastparquet spends ~1 ms of GIL per column, so 384 embedding columns stalled
    requests; on disk they are one binary column, read back as the same float columns."""
    import pyarrow.parquet as pq

    sent = entries(1, items=3)
    sent[1]["features"] = None  # a row logged without features reads as missing values
    with PredictionLog(tmp_path) as log:
        log.record_many(sent)
    schema = pq.read_schema(log_files(tmp_path)[0])
    assert plog.PACKED_COLUMN in schema.names and "emb_000" not in schema.names
    assert len(schema.names) == len(plog.ENTRY_FIELDS) + N_HAND_FEATURES + 1
    frame = read_prediction_log(tmp_path)
    assert list(frame.columns[-len(FEATURE_COLUMNS) :]) == list(FEATURE_COLUMNS)
    values = frame[list(FEATURE_COLUMNS)].to_numpy(float)
    np.testing.assert_array_equal(
        values[[0, 2]], np.vstack([sent[0]["features"], sent[2]["features"]])
    )
    assert np.isnan(values[1]).all()
    picked = read_prediction_log(tmp_path, columns=["prediction", "emb_383"])
    assert list(picked.columns) == ["request_id", "item", "timestamp", "prediction", "emb_383"]
    np.testing.assert_array_equal(picked["emb_383"].to_numpy()[[0, 2]], values[[0, 2], -1])
