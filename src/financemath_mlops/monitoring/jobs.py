"""The two report jobs end to end: resolve the model, load the inputs, report, publish, log.

Publishing (``reports/latest.json``), the history (``reports/index.jsonl``) and MLflow logging
come after the report files are written; a tracking store that cannot be reached costs the MLflow
run (with a warning), never the report. A full disk costs the whole report instead (exit 1):
folder, index line and ``latest.json`` are published together or not at all.

Both jobs refuse inputs with fewer rows than ``monitoring.min_rows`` on any side
(:func:`.inputs.require_rows`), before the statistics: a drift test on six rows says "no
dataset drift" about plainly drifted data, so a gate (``--fail-on-drift``, the scheduled flow)
must not pass on it.
The command line and the scheduled flow both run these two jobs, so they share the one minimum.
The command line exits 2 and publishes nothing; the scheduled flow (:func:`run_scheduled_drift`)
publishes a drift section that says it skipped (``skipped``, ``current_rows``, no ``share``),
else the last real window's numbers would stay in ``latest.json`` and its alert would never
resolve.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from financemath_mlops import runs
from financemath_mlops.atomic import out_of_space
from financemath_mlops.config import (
    FeatureSettings,
    MLflowSettings,
    MonitoringSettings,
    PathsSettings,
)
from financemath_mlops.errors import OutOfSpaceError
from financemath_mlops.monitoring.drift import compare, report_dir, write_drift_report
from financemath_mlops.monitoring.history import INDEX_FILE, record_report
from financemath_mlops.monitoring.inputs import (
    Featurizer,
    MonitoringError,
    TooFewRows,
    load_input,
    require_rows,
    resolve_model,
    training_features,
)
from financemath_mlops.monitoring.performance import (
    assess,
    write_performance_report,
)
from financemath_mlops.monitoring.publish import LATEST_FILE, publish_latest

log = logging.getLogger(__name__)


@dataclass
class DriftJob:
    reference: Path | None = None  # None: the model's training feature table
    current: Path | None = None  # None: the prediction log (paths.predictions_dir)
    since: datetime | None = None
    until: datetime | None = None
    output: Path | None = None  # None: <reports_dir>/<timestamp>/
    model_uri: str | None = None  # None: the served model (serving.model_uri or name@alias)
    drift_share: float | None = None
    components: int | None = None
    mlflow: bool = True
    publish: bool = True


@dataclass
class Done:
    """One finished report: the outcome, its files, and the headline numbers it published."""

    outcome: Any  # DriftOutcome | PerformanceOutcome
    files: dict[str, Path]
    numbers: dict[str, Any]


@dataclass
class PerformanceJob:
    model_uri: str | None = None
    data: Path | None = None  # None: the model run's holdout records
    output: Path | None = None
    mlflow: bool = True
    publish: bool = True


def run_drift(
    cfg: MonitoringSettings,
    job: DriftJob,
    *,
    store: MLflowSettings,
    features: FeatureSettings,
    paths: PathsSettings,
    served_uri: str,
) -> Done:
    """Make, write, publish, index and log one drift report.

    ``store``: where the model (``job.model_uri``, default ``served_uri``: the one in service)
    and the report's run are; ``features``: how records are embedded when the inputs are raw;
    ``paths``: the prediction log, the reports, the embedding caches."""
    threshold = job.drift_share if job.drift_share is not None else cfg.drift_share_threshold
    current_path = job.current or paths.predictions_dir
    for path in (job.reference, current_path):  # fail before any slow step
        if path is not None and not Path(path).exists():
            raise MonitoringError(
                f"{path} not found: pass a feature Parquet, a FinanceMath .json/.jsonl/.parquet "
                "file or the prediction log directory"
            )
    with tempfile.TemporaryDirectory(prefix="fmops-drift-") as tmp:
        work = Path(tmp)
        model = None
        if job.reference is None or job.model_uri is not None:
            model = resolve_model(store, job.model_uri or served_uri, work)
        embedding = model.manifest.get("embedding") if model else None
        featurizer = Featurizer(features, paths, embedding)
        if job.reference is None:
            assert model is not None
            reference = training_features(model, work)
        else:
            reference = load_input(job.reference, featurizer)
        require_rows(
            {"reference": reference.rows},
            cfg.min_rows,
            reference.source,
            "pass a larger --reference" if job.reference else "pass a larger table as --reference",
        )
        current = load_input(current_path, featurizer, job.since, job.until)
        more = (
            "widen the window (--since/--until; the scheduled flow's --window-hours)"
            if current.kind == "prediction-log"
            else "pass a larger --current"
        )
        require_rows({"current": current.rows}, cfg.min_rows, current.source, more)
        log.info("comparing %d current rows with %d reference rows", current.rows, reference.rows)
        outcome = compare(reference, current, threshold, job.components or cfg.embedding_components)
        outcome.model = model.identity() if model else None
    output = job.output or report_dir(paths.reports_dir)
    created = not output.exists()
    files = write_drift_report(outcome, output)
    numbers: dict[str, Any] = {
        **outcome.summary(),
        "mean_cosine_distance": outcome.embedding.get("mean_cosine_distance"),
        "current_rows": current.rows,
        "reference_rows": reference.rows,
        "model": outcome.model,
        "report": str(output),
    }
    numbers.pop("drifted_by_group")
    _index_and_publish(paths.reports_dir, "drift", numbers, output, created, job.publish)
    if job.mlflow:
        metrics = {
            "drift_share": outcome.share,
            "drifted_columns": outcome.drifted,
            "columns_tested": len(outcome.columns),
            "dataset_drift": float(outcome.dataset_drift),
            "embedding_cosine_distance": outcome.embedding.get("mean_cosine_distance"),
            "embedding_p_value": outcome.embedding.get("mean_p_value"),
            "current_rows": current.rows,
            "reference_rows": reference.rows,
        }
        tags = {"reference": reference.source, "current": current.source, "report": output}
        tags = {**tags, **_model_tags(outcome.model)}
        _log_safely(store, cfg.experiment_name, "drift", metrics, tags, files)
    return Done(outcome, files, numbers)


def run_scheduled_drift(
    cfg: MonitoringSettings,
    job: DriftJob,
    *,
    store: MLflowSettings,
    features: FeatureSettings,
    paths: PathsSettings,
    served_uri: str,
) -> dict[str, Any]:
    """The scheduled flow's drift report; a window with too few rows publishes a skip, then raises.

    ``/metrics`` reads ``latest.json``: left alone, the previous window's drift would keep
    ``FinanceMathInputDrift`` firing for as long as traffic stays low.
    """
    try:
        where = {"store": store, "features": features, "paths": paths, "served_uri": served_uri}
        return run_drift(cfg, job, **where).numbers
    except TooFewRows as exc:
        if job.publish:
            publish_latest(paths.reports_dir, "drift", skipped_drift(cfg, job, exc))
        raise


def skipped_drift(cfg: MonitoringSettings, job: DriftJob, exc: TooFewRows) -> dict[str, Any]:
    """The drift section of a skipped window: its row counts and why, no share, no drift."""
    threshold = job.drift_share or cfg.drift_share_threshold
    return {
        "columns": None,
        "drifted": None,
        "share": None,
        "drift_share_threshold": threshold,
        "dataset_drift": False,
        "mean_cosine_distance": None,
        "current_rows": exc.counts.get("current"),
        "reference_rows": exc.counts.get("reference"),
        "model": None,
        "report": None,
        "skipped": str(exc),
    }


def run_performance(
    cfg: MonitoringSettings,
    job: PerformanceJob,
    *,
    store: MLflowSettings,
    paths: PathsSettings,
    served_uri: str,
) -> Done:
    """Make, write, publish, index and log one performance report (the model ``job.model_uri``,
    default ``served_uri``, in ``store``; the report under ``paths.reports_dir``)."""
    with tempfile.TemporaryDirectory(prefix="fmops-performance-") as tmp:
        work = Path(tmp)
        model = resolve_model(store, job.model_uri or served_uri, work)
        outcome = assess(model, job.data, work, cfg.min_rows)
    output = job.output or report_dir(paths.reports_dir)
    created = not output.exists()
    files = write_performance_report(outcome, output)
    training_mae = outcome.training.get("holdout", {}).get("mae")
    numbers = {
        **{k: outcome.metrics.get(k) for k in ("mae", "rmse", "log_mae", "accuracy")},
        "rows": outcome.metrics.get("n"),
        "training_mae": training_mae,
        "training_log_mae": outcome.training.get("holdout", {}).get("log_mae"),
        "model": outcome.model,
        "report": str(output),
    }
    _index_and_publish(paths.reports_dir, "performance", numbers, output, created, job.publish)
    if job.mlflow:
        metrics = {k: v for k, v in outcome.metrics.items() if isinstance(v, int | float)}
        metrics.update({f"evidently_{k}": v for k, v in outcome.evidently_metrics.items()})
        if training_mae is not None:
            metrics["training_holdout_mae"] = training_mae
        tags = {"data": outcome.data["source"], "report": output}
        tags = {**tags, **_model_tags(outcome.model)}
        _log_safely(store, cfg.experiment_name, "performance", metrics, tags, files)
    return Done(outcome, files, numbers)


def _index_and_publish(
    reports_dir: Path, kind: str, numbers: dict, output: Path, created: bool, publish: bool
) -> None:
    """The report's line in ``index.jsonl``, then its section of ``latest.json``: all or none.

    On a full disk the line is cut back and a report folder this run created is removed, so the
    reports are the previous complete set (folders, index, latest.json), never a report the
    index or ``/metrics`` does not know about.
    """
    reports = Path(reports_dir)
    index = reports / INDEX_FILE
    before = index.stat().st_size if index.is_file() else None
    try:
        record_report(reports, kind, numbers)
        if publish:
            publish_latest(reports, kind, numbers)
    except OutOfSpaceError as exc:
        if before is not None and index.stat().st_size > before:
            os.truncate(index, before)
        elif before is None:
            index.unlink(missing_ok=True)
        if created:
            shutil.rmtree(output, ignore_errors=True)
        kept = (
            f"no {kind} report was published: {index.name} and {LATEST_FILE} are as they were"
            + (f" and {output} was removed" if created else "")
        )
        raise out_of_space(reports, kept) from exc


def _model_tags(model: dict[str, Any] | None) -> dict[str, Any]:
    return {f"model.{k}": v for k, v in (model or {}).items() if v is not None}


def _log_safely(
    store: MLflowSettings, experiment: str, kind: str, metrics: dict, tags: dict, files: dict
) -> None:
    try:
        reports = [files["json"], files["html"]]
        runs.log_monitoring_report(store, experiment, kind, metrics, tags, reports)
    except Exception as exc:  # the report is written; a tracking problem must not hide it
        log.warning("could not log the %s report to MLflow: %s", kind, exc)
