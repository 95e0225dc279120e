"""What later stages add to runs: evaluation and promotion on the model's training run, and each
monitoring report as a run of its own in the monitoring experiment.

The training run stays the one record of a model (its holdout figures, why it was or was not
promoted); monitoring runs form a time series tagged with the model they are about.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from financemath_mlops.config import MLflowSettings
from financemath_mlops.runs.contract import EVALUATION_DIR, REPORT_DIR
from financemath_mlops.runs.store import configure, ensure_experiment

log = logging.getLogger(__name__)


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """MLflow refuses None and stores NaN badly: keep the finite numbers (a flag counts 0/1)."""
    out = {}
    for key, value in metrics.items():
        if not isinstance(value, numbers.Real):  # numpy scalars and bools too
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def record_evaluation(run_id: str, metrics: Mapping[str, float], report_file: Path) -> None:
    """The holdout and baseline metrics, and the metrics file, on the model's training run."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(_finite(metrics))
        mlflow.log_artifact(str(report_file), EVALUATION_DIR)


def record_promotion(run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float]) -> None:
    """The promotion decision (tags: decision, reason, ...; metrics: n, interval) on the run."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags(dict(tags))
        mlflow.log_metrics(_finite(metrics))


def monitoring_experiment(store: MLflowSettings, name: str) -> str:
    """The monitoring experiment's id, created on first use.

    Against a tracking server the server chooses the artefact location (mlflow-artifacts:/ when it
    serves artefacts), which every client can reach; a local artifact_root would not be.
    """
    import mlflow

    uri = configure(store)
    if uri.startswith(("http://", "https://")):
        existing = mlflow.get_experiment_by_name(name)
        return existing.experiment_id if existing is not None else mlflow.create_experiment(name)
    return ensure_experiment(store, name)


def log_monitoring_report(
    store: MLflowSettings,
    experiment: str,
    kind: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    files: list[Path],
) -> str:
    """One run in the monitoring experiment (monitoring.experiment_name) with a report's numbers
    and files; its id."""
    import mlflow

    experiment_id = monitoring_experiment(store, experiment)
    run_name = f"{kind}-{time.strftime('%Y%m%dT%H%M%S')}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tags({"monitoring.kind": kind, **{k: str(v) for k, v in tags.items()}})
        mlflow.log_metrics(_finite(metrics))
        for path in files:
            mlflow.log_artifact(str(path), REPORT_DIR)
    log.info(
        "logged the %s report to MLflow experiment %s (run %s)",
        kind,
        experiment,
        run.info.run_id,
    )
    return run.info.run_id
