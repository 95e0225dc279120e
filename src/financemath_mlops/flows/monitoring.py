"""The scheduled monitoring flow: drift and performance reports, and retraining on evidence.

Runs every ``monitoring.schedule_hours`` as the ``scheduled-monitoring`` deployment (beside the
nightly retrain; see :mod:`.deployment`). Each run reports drift of the last
``monitoring.window_hours`` of the prediction log against the served model's training data, and
performance on ``monitoring.performance_data`` when one is configured (else it says why it
skipped). A window with fewer than ``monitoring.min_rows`` predictions (or none) publishes a
drift section saying it skipped, so ``/metrics`` stops showing the previous window's drift.
Reports are published as by hand (``reports/latest.json`` for /metrics, the history
``reports/index.jsonl``, MLflow). When a report is evidence (:mod:`..monitoring.evidence`) it
emits the Prefect event the retraining deployment's trigger waits for, once per served model:
a request already made for the same model version is not repeated every six hours.

    python -m financemath_mlops.flows.monitoring [--window-hours 24] [--performance-data FILE]
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # before Prefect is imported: it reads its settings at import time
    from financemath_mlops.flows.environment import prepare_prefect_env

    prepare_prefect_env()

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from financemath_mlops import runs
from financemath_mlops.config import Settings, load_settings
from financemath_mlops.flows.events import RETRAIN_REQUESTED, model_resource
from financemath_mlops.monitoring.evidence import Verdict, drift_verdict, performance_verdict
from financemath_mlops.monitoring.history import read_history, record_report

RETRAIN_REQUEST_KIND = "retrain-request"


@task(name="drift-report", cache_policy=NO_CACHE)
def drift_task(settings: Settings, window_hours: float) -> dict[str, Any] | None:
    """The drift report's numbers, or None when there is nothing to compare (logged)."""
    from financemath_mlops.monitoring.inputs import MonitoringError
    from financemath_mlops.monitoring.jobs import DriftJob, run_scheduled_drift

    since = datetime.now(UTC) - timedelta(hours=window_hours)
    try:  # too few rows still publishes (a skipped section), so the last window's alert resolves
        return run_scheduled_drift(
            settings.monitoring, DriftJob(since=since), store=settings.mlflow,
            features=settings.features, paths=settings.paths,
            served_uri=runs.served_uri(settings.serving),
        )  # fmt: skip
    except MonitoringError as exc:
        get_run_logger().warning("drift report skipped: %s", exc)
        return None


@task(name="performance-report", cache_policy=NO_CACHE)
def performance_task(settings: Settings, data: Path) -> dict[str, Any] | None:
    from financemath_mlops.monitoring.inputs import MonitoringError
    from financemath_mlops.monitoring.jobs import PerformanceJob, run_performance

    try:
        return run_performance(
            settings.monitoring, PerformanceJob(data=data), store=settings.mlflow,
            paths=settings.paths, served_uri=runs.served_uri(settings.serving),
        ).numbers  # fmt: skip
    except MonitoringError as exc:
        get_run_logger().warning("performance report skipped: %s", exc)
        return None


def earlier_request(reports_dir: Path, model: dict[str, Any] | None) -> dict[str, Any] | None:
    """The last retraining request if it was for this same model (then: do not ask again)."""
    previous = read_history(reports_dir, RETRAIN_REQUEST_KIND, limit=1)
    if not previous or not model:
        return None
    asked_for = previous[-1].get("model") or {}
    same = all(asked_for.get(k) == model.get(k) for k in ("name", "version", "run_id"))
    return previous[-1] if same else None


@task(name="request-retraining", cache_policy=NO_CACHE)
def request_retraining(settings: Settings, verdicts: list[Verdict]) -> dict[str, Any] | None:
    """Emit the retraining event (once per served model); the request, or None if not sent."""
    from prefect.events import emit_event

    logger = get_run_logger()
    reports = settings.paths.reports_dir
    model = next((v.numbers.get("model") for v in verdicts if v.numbers.get("model")), None)
    previous = earlier_request(reports, model)
    if previous is not None:
        logger.info(
            "retraining was already requested for this model at %s: not asking again until "
            "a new champion is served",
            previous.get("time"),
        )
        return None
    reasons = [f"{v.kind}: {v.reason}" for v in verdicts]
    event = emit_event(
        event=RETRAIN_REQUESTED,
        resource=model_resource(model),
        payload={"reasons": reasons, "reports": [v.numbers.get("report") for v in verdicts]},
    )
    if event is None:
        logger.warning("Prefect events are off here: retraining was not requested")
        return None
    request = {"model": model, "reasons": reasons, "event_id": str(event.id)}
    record_report(reports, RETRAIN_REQUEST_KIND, request)
    logger.info("requested retraining (event %s %s): %s", RETRAIN_REQUESTED, event.id, reasons)
    return request


@flow(name="financemath-monitoring")
def financemath_monitoring(
    window_hours: float | None = None,
    performance_data: str | None = None,
    retrain: bool | None = None,
    config: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Report drift (and performance if labelled data is configured); ask for retraining."""
    logger = get_run_logger()
    settings = load_settings(config, {"mlflow": {"tracking_uri": tracking_uri}})
    runs.check_reachable(settings.mlflow)  # the drift report reads the served model's run
    cfg = settings.monitoring
    drift = drift_task(settings, window_hours or cfg.window_hours)
    verdicts = [drift_verdict(drift, cfg.min_rows)] if drift else []
    data = performance_data or cfg.performance_data
    performance = None
    if data is None:
        logger.info(
            "performance report skipped: no labelled file configured "
            "(monitoring.performance_data, FMOPS_MONITORING__PERFORMANCE_DATA)"
        )
    else:
        performance = performance_task(settings, Path(data))
        if performance:
            verdicts.append(
                performance_verdict(performance, cfg.degraded_log_mae_ratio, cfg.min_rows)
            )
    for verdict in verdicts:
        logger.info("%s: %s -> %s", verdict.kind, verdict.reason,
                    "evidence for retraining" if verdict.retrain else "no action")  # fmt: skip
    evidence = [v for v in verdicts if v.retrain]
    wanted = cfg.retrain_on_evidence if retrain is None else retrain
    request = request_retraining(settings, evidence) if evidence and wanted else None
    summary = {
        "drift": drift,
        "performance": performance,
        "verdicts": [{"kind": v.kind, "retrain": v.retrain, "reason": v.reason} for v in verdicts],
        "retrain_requested": request is not None,
    }
    create_markdown_artifact(
        key="financemath-monitoring",
        markdown="\n".join(
            ["| report | evidence | why |", "|---|---|---|"]
            + [f"| {v.kind} | {'yes' if v.retrain else 'no'} | {v.reason} |" for v in verdicts]
            + ["", f"retraining requested: {'yes' if request else 'no'}"]
        ),
        description="Monitoring verdicts",
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    from financemath_mlops.cli import base_parser, setup_logging

    parser = base_parser("python -m financemath_mlops.flows.monitoring", __doc__ or "")
    parser.add_argument("--window-hours", type=float, help="prediction log window (24)")
    parser.add_argument("--performance-data", type=Path, help="labelled FinanceMath file")
    parser.add_argument("--no-retrain", action="store_true", help="report only, never ask")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: mlflow.tracking_uri)")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    # fail on bad settings before Prefect starts a server
    settings = load_settings(
        args.config,
        {"mlflow": {"tracking_uri": args.tracking_uri}},
        {"mlflow.tracking_uri": "--tracking-uri"},
    )
    runs.check_reachable(settings.mlflow)  # ... and on a dead tracking server
    summary = financemath_monitoring(
        window_hours=args.window_hours,
        performance_data=str(args.performance_data) if args.performance_data else None,
        retrain=False if args.no_retrain else None,
        config=str(args.config) if args.config else None,
        tracking_uri=args.tracking_uri,
    )
    for verdict in summary["verdicts"]:
        print(f"{verdict['kind']:12} {'EVIDENCE' if verdict['retrain'] else 'ok':9} "
              f"{verdict['reason']}")  # fmt: skip
    print(f"retraining requested: {'yes' if summary['retrain_requested'] else 'no'}")
    return 0


if __name__ == "__main__":
    from financemath_mlops.cli import run_main

    sys.exit(run_main(main))
