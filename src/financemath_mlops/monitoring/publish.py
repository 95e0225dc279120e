"""Where report numbers go besides the report folder: ``reports/latest.json`` and MLflow.

``latest.json`` holds the headline numbers of the newest drift and performance reports (each
section replaced by its own kind of report). The service reads it at scrape time (see
:mod:`.metrics`), so ``/metrics`` always shows the latest report: no Pushgateway to run, nothing
stale after the job ends, and it survives service restarts. The same numbers go to one run per
report in the ``financemath-monitoring`` MLflow experiment (``runs.log_monitoring_report``),
tagged with the model's name, version and run id: the training run stays an immutable record of
training, and the monitoring runs form a time series that can be searched and charted by model.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from financemath_mlops.atomic import published_folder, write_json

log = logging.getLogger(__name__)

LATEST_FILE = "latest.json"

# Prometheus gauge name -> (latest.json section, key, help). The one list of report metrics.
REPORT_GAUGES: dict[str, tuple[str, str, str]] = {
    "fmops_drift_share": ("drift", "share", "Share of drifted columns in the latest drift report"),
    "fmops_drift_columns_drifted": ("drift", "drifted", "Drifted columns in the latest report"),
    "fmops_drift_columns_tested": ("drift", "columns", "Columns tested in the latest report"),
    "fmops_drift_detected": (
        "drift", "dataset_drift", "1 when the drift share reached the threshold, else 0",
    ),
    "fmops_drift_share_threshold": (
        "drift", "drift_share_threshold", "Drift share at which the dataset counts as drifted",
    ),
    "fmops_drift_embedding_cosine_distance": (
        "drift", "mean_cosine_distance", "Cosine distance of mean current vs reference embedding",
    ),
    "fmops_drift_current_rows": ("drift", "current_rows", "Rows in the latest report's window"),
    "fmops_drift_report_timestamp_seconds": (
        "drift", "timestamp", "Unix time of the latest drift report",
    ),
    "fmops_performance_mae": ("performance", "mae", "MAE in the latest performance report"),
    "fmops_performance_rmse": ("performance", "rmse", "RMSE in the latest performance report"),
    "fmops_performance_log_mae": (
        "performance", "log_mae", "MAE on the signed-log1p scale, latest performance report",
    ),
    "fmops_performance_accuracy": (
        "performance", "accuracy", "FinanceMath tolerance accuracy, latest performance report",
    ),
    "fmops_performance_training_mae": (
        "performance", "training_mae", "Holdout MAE the model had at training time",
    ),
    "fmops_performance_training_log_mae": (
        "performance", "training_log_mae", "Holdout log-MAE the model had at training time",
    ),
    "fmops_performance_rows": ("performance", "rows", "Labelled rows in the latest report"),
    "fmops_performance_report_timestamp_seconds": (
        "performance", "timestamp", "Unix time of the latest performance report",
    ),
}  # fmt: skip


def read_latest(reports_dir: Path | str) -> dict[str, Any]:
    """``latest.json`` as a dict (empty when there is none or it cannot be read)."""
    path = Path(reports_dir) / LATEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def publish_latest(reports_dir: Path | str, kind: str, values: Mapping[str, Any]) -> Path:
    """Replace the ``kind`` section of ``latest.json`` (atomically; other sections are kept)."""
    path = Path(reports_dir) / LATEST_FILE
    data = read_latest(reports_dir)
    data[kind] = {"timestamp": time.time(), **values}
    write_json(path, finite_json(data))
    readable(path)
    return path


def readable(path: Path) -> None:
    """World-readable: the service that shows these numbers may run as another user."""
    try:
        path.chmod(0o644)
    except OSError as exc:
        log.warning("cannot make %s readable for the service: %s", path, exc)


def latest_report_metrics(reports_dir: Path | str) -> dict[str, float]:
    """Prometheus gauge name -> value for every number the latest reports have (see REPORT_GAUGES).

    Cheap (one small JSON file) and never raises: no report yet means an empty dict.
    """
    data = read_latest(reports_dir)
    values: dict[str, float] = {}
    for name, (section, key, _help) in REPORT_GAUGES.items():
        value = (data.get(section) or {}).get(key)
        if isinstance(value, bool):
            value = float(value)
        if isinstance(value, int | float) and math.isfinite(value):
            values[name] = float(value)
    return values


def finite_json(value: Any) -> Any:
    """NaN and infinities become null, numpy scalars plain numbers (our JSON files are strict)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return finite_json(value.item())
    return value


def write_report_files(output: Path, stem: str, evidently: Any, payload: dict) -> dict[str, Path]:
    """``<stem>.html`` (Evidently's page) and ``<stem>.json`` (ours), published together.

    Both are written into a staging folder first (:func:`atomic.published_folder`): a new report
    folder appears with both files or not at all, and a full disk (exit 1, naming the folder)
    leaves no half-written report and an existing ``--output`` folder as it was.
    """
    html, data = output / f"{stem}.html", output / f"{stem}.json"
    with published_folder(output) as staging:
        if evidently is not None:
            evidently.save_html(staging / html.name)
        write_json(staging / data.name, finite_json(payload))
        for path in staging.iterdir():
            readable(path)
    return {"html": html, "json": data}
