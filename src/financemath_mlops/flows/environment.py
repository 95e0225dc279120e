"""Quiet, quick Prefect defaults for a first run; call before importing prefect.

Only defaults: anything the user already set in the environment wins.
"""

from __future__ import annotations

import os
from pathlib import Path

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
    """Keep Prefect's database and logs under the project (./.cache/prefect), analytics off."""
    os.environ.setdefault("PREFECT_HOME", str((cache_dir / "prefect").resolve()))
    for name, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(name, value)
