"""Quiet, quick Prefect defaults for a first run (call before importing prefect), and the
temporary server started early, beside the run's own preparation.

Only defaults: anything the user already set in the environment wins.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from financemath_mlops.errors import StageError

if TYPE_CHECKING:
    from financemath_mlops.config import Settings

log = logging.getLogger(__name__)

PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
    "PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY": "false",
    # The temporary server takes 10-15 s to start on 2 cores (24 s the first time): allow more.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_LOGGING_LOG_PRINTS": "true",
}


def prepare_prefect_env(cache_dir: Path = Path(".cache")) -> None:
    """Keep Prefect's database and logs under the project (./.cache/prefect), analytics off.

    Prefect creates only the last folder of its home, and its temporary server then fails 40
    times in a row until a 2-minute timeout: create the whole path and check the database can
    be opened first, so a problem is one clear error at once.
    """
    os.environ.setdefault("PREFECT_HOME", str((cache_dir / "prefect").resolve()))
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if os.environ.get("PREFECT_API_URL") or os.environ.get("PREFECT_API_DATABASE_CONNECTION_URL"):
        return  # a running server, or a database of the user's choosing: not ours to check
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(home / "prefect.db", timeout=30)) as db:
            db.execute("PRAGMA user_version").fetchone()
    except (OSError, sqlite3.Error) as exc:
        raise StageError(
            f"Prefect cannot keep its database in {home} ({exc}). Make that folder writable, "
            "set PREFECT_HOME to one that is, or run against a Prefect server "
            "(PREFECT_API_URL=http://127.0.0.1:4200/api)."
        ) from None


class TemporaryServer:
    """Prefect's temporary server, started early (:func:`start_temporary_server`).

    Prefect starts it at the flow's first API call and waits for it: 10-15 s on 2 cores for a
    fresh home (its database is created by migrations), time the run would only wait. Started
    here, the same server (Prefect's own ``SubprocessASGIServer``, which the flow then finds
    running) comes up in its own process while this one prepares the embedding bundle; a thread
    here only launches it and polls its health.
    """

    def __init__(self) -> None:
        # Imported here, not in the thread: an import holds the GIL, and the bundle's own
        # imports (torch) would otherwise delay the launch by seconds.
        from prefect.server.api.server import SubprocessASGIServer

        self.error: BaseException | None = None
        self._server = SubprocessASGIServer()
        self._thread = threading.Thread(target=self._start, name="prefect-server", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            self._server.start()  # launch, then poll /health; Prefect stops it at exit
        except BaseException as exc:  # handed to wait(), in the main thread
            self.error = exc

    def wait(self) -> None:
        """Return once the server answers; raise what its start raised."""
        self._thread.join()
        if self.error is not None:
            raise self.error


def start_temporary_server() -> TemporaryServer | None:
    """Start Prefect's temporary server now, in the background; None when the run uses a
    server of the user's (PREFECT_API_URL, in the environment or the Prefect profile). Call
    :func:`prepare_prefect_env` first: the server reads PREFECT_HOME."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    return TemporaryServer()


def prepare_embedding_bundle(settings: Settings) -> None:
    """Find or export the ONNX embedding bundle the features task will use, while Prefect's
    temporary server starts: the export (6-20 s of torch, once per user and model: the bundle is
    cached outside the clone) overlaps the server's start instead of following it.

    Best effort: a failure here is left for the features task to meet and report inside the flow,
    as it would without this step.
    """
    cfg = settings.features.embedding
    if cfg.backend != "onnx":
        return
    from financemath_mlops.features.build import bundle_dir
    from financemath_mlops.features.onnx_export import ensure_onnx_bundle
    from financemath_mlops.features.weights import resolve_weights

    try:
        resolved = resolve_weights(
            cfg.model_id,
            revision=cfg.revision,
            local_path=cfg.local_path,
            hf_cache_dir=settings.paths.hf_cache_dir,
        )
        ensure_onnx_bundle(resolved, bundle_dir(settings.paths), cfg.max_length, cfg.precision)
    except Exception as exc:
        log.info(
            "the embedding bundle is left to the features task (%s: %s)", type(exc).__name__, exc
        )
