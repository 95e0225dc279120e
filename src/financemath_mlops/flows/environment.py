"""Quiet, quick Prefect defaults for a first run; call before importing prefect.

Only defaults: anything the user already set in the environment wins.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from financemath_mlops.errors import StageError

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
