"""Load the served model from MLflow and swap it for a newer one without dropping requests.

The holder resolves the configured alias (or URI) to a pinned version, loads the pyfunc that
training logged, takes its :class:`Predictor`, warms it up, and only then swaps it in: one
attribute assignment under a lock, so a request that already took the old model finishes on it.
A failed (re)load keeps whatever was being served and records the reason for ``/ready``. With
several uvicorn workers, each worker holds and reloads its own model.
"""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from financemath_mlops import runs
from financemath_mlops.config import ServingSettings
from financemath_mlops.model.folder import load_folder
from financemath_mlops.model.predictor import with_threads
from financemath_mlops.records import RecordInput
from financemath_mlops.serving.dependencies import public_text, store_unreachable
from financemath_mlops.serving.schemas import EXAMPLE_RECORD

log = logging.getLogger(__name__)

WARMUP_RECORD = RecordInput.from_mapping(EXAMPLE_RECORD)
# The adaptive pool's all-core session runs only calls that start alone, so its threads may spin
# within a run (a lone /predict 14.2 -> 12.1 ms); never between runs. benchmarks/serving.py
# measures its in-process floor on this same setting.
LONE_CALL_SPINNING = "within_run"
# Where SQLAlchemy / the DB driver starts quoting internals: statement, parameters, driver error.
_DB_DETAILS = re.compile(r"\[SQL:|\(sqlite3\.|\(psycopg|\(pymysql|\(Background on this error")


class ModelLoadError(RuntimeError):
    """The configured model could not be resolved or loaded; the message says why."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to serve, with what the registry and the run say about it."""

    ref: runs.ModelRef
    predictor: Any
    source_uri: str
    loaded_at: datetime
    training_metrics: dict[str, float]
    concurrent_predictor: Any = None  # same model, fewer ONNX threads: for overlapping calls
    trained_at: float | None = None  # Unix time the model was logged (MLmodel utc_time_created)

    def identity(self) -> dict[str, str | None]:
        return {
            "name": self.ref.name,
            "version": self.ref.version,
            "alias": self.ref.alias,
            "run_id": self.ref.run_id,
        }


@dataclass(frozen=True)
class ReloadOutcome:
    changed: bool
    model: LoadedModel
    previous: LoadedModel | None


class ModelHolder:
    """The current model of this worker; thread-safe loads, lock-free reads."""

    def __init__(
        self,
        serving: ServingSettings,
        threads: int | None = None,
        concurrent_threads: int | None = None,
        on_change: Any = None,
        on_store: Any = None,
    ):
        self.serving = serving
        self.threads = threads
        self.concurrent_threads = concurrent_threads
        self.on_change = on_change
        # on_store(up, exc): what each load from the tracking store said about the store.
        self.on_store = on_store
        self.problem: str | None = "the model is loading"
        self._current: LoadedModel | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def load(self) -> ReloadOutcome:
        """Resolve and load the configured model; swap it in if it is a different version.

        Raises :class:`ModelLoadError` (the old model, if any, stays in service).
        """
        uri = runs.served_uri(self.serving)
        with self._lock:
            previous = self._current
            resolved = False
            try:
                ref = runs.resolve(uri)
                resolved = True
                if ref.name and ref.alias is None and not runs.is_tracked_uri(uri):
                    # A model folder has no alias of its own: the configured one says what it is.
                    ref = replace(ref, alias=self.serving.alias)
                if previous is not None and previous.ref.uri == ref.uri:
                    self._store_said(uri, None, True)
                    return ReloadOutcome(False, previous, previous)
                started = time.perf_counter()
                model = self._load(uri, ref)
            except Exception as exc:
                reason = describe_failure(uri, exc)
                if previous is None:
                    self.problem = reason
                log.error("%s", reason, exc_info=not isinstance(exc, runs.TrackingError))
                self._store_said(uri, exc, resolved)
                raise ModelLoadError(reason) from None
            self._current = model
            self.problem = None
        self._store_said(uri, None, True)
        # Everything alive now (the model, its sessions, the libraries) lives as long as the
        # service: freeze it out of the collector, so a gen-2 collection under load scans only
        # what requests allocate (issue 32's tail profile: one gen-2 pass took 111 ms on 2
        # loaded cores). A swapped-out model is still freed by reference counting; only
        # reference cycles it holds outlive it.
        gc.collect()
        gc.freeze()
        log.info(
            "serving %s version %s (%s) from run %s; loaded in %.1fs",
            ref.name or uri,
            ref.version or "-",
            uri,
            ref.run_id,
            time.perf_counter() - started,
        )
        if self.on_change is not None:
            self.on_change(model)
        return ReloadOutcome(True, model, previous)

    def _store_said(self, uri: str, exc: Exception | None, resolved: bool) -> None:
        """Tell ``on_store`` whether the tracking store answered (models:/ and runs:/ only)."""
        if self.on_store is None or not runs.is_tracked_uri(uri):
            return
        unreachable = store_unreachable(exc) if exc is not None else False
        if unreachable:
            self.on_store(False, exc)
        elif unreachable is False or resolved:
            self.on_store(True, None)

    def _load(self, uri: str, ref: runs.ModelRef) -> LoadedModel:
        from_registry = runs.is_tracked_uri(uri)
        adaptive = self.concurrent_threads not in (None, self.threads)
        spinning = "always"  # no serving threads given: the logged session as it is
        if adaptive:
            spinning = LONE_CALL_SPINNING
        elif self.threads is not None:
            spinning = "never"
        # Our own model folder loads without importing MLflow (1.2 s of a 2 s start, issue 18),
        # its embedder built with the serving threads at once (no session built to be replaced).
        folder = None
        if not from_registry:
            folder = load_folder(Path(ref.uri), self.threads, spinning)
        if folder is not None:
            logged, trained_at = folder.predictor, folder.trained_at
        else:
            pyfunc = runs.load_pyfunc(ref.uri)
            logged, trained_at = pyfunc.unwrap_python_model().predictor, _created(pyfunc)
        predictor = logged
        if self.threads is not None:
            # A folder's predictor already has these threads and spinning: returned as it is.
            predictor = with_threads(logged, self.threads, spinning)
        concurrent = with_threads(logged, self.concurrent_threads) if adaptive else predictor
        for each in {id(predictor): predictor, id(concurrent): concurrent}.values():
            each.predict([WARMUP_RECORD])  # fail here, not on the first request
        return LoadedModel(
            ref=ref,
            predictor=predictor,
            source_uri=uri,
            loaded_at=datetime.now(UTC),
            # A folder needs no registry: its run's metrics are not worth waiting for a store.
            training_metrics=_training_metrics(ref.run_id) if from_registry else {},
            concurrent_predictor=concurrent,
            trained_at=trained_at,
        )


def _created(pyfunc: Any) -> float | None:
    """When the model was logged (its MLmodel's UTC time): the model-age alert's clock."""
    text = str(getattr(getattr(pyfunc, "metadata", None), "utc_time_created", "") or "")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def _training_metrics(run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    try:
        return {k: float(v) for k, v in runs.run_metrics(run_id).items()}
    except Exception as exc:  # metrics are informative; a missing run must not block serving
        log.warning("could not read training metrics of run %s: %s", run_id, exc)
        return {}


def describe_failure(uri: str, exc: Exception) -> str:
    """The reason /ready and a failed reload show: /ready is open to anyone, so no credentials,
    no file system paths and no database internals (SQL); the full error goes to the log."""
    if isinstance(exc, runs.TrackingError):
        text = _DB_DETAILS.split(str(exc), maxsplit=1)[0].rstrip(" :(")
        text = text.splitlines()[0] if text else type(exc).__name__
    else:
        text = f"model {uri} could not be loaded ({type(exc).__name__})"
    return f"{public_text(text)}; see the service log"
