"""Scheduled retraining and monitoring: two deployments on a process work pool.

``nightly-retrain`` runs the pipeline flow on a cron schedule and also whenever a monitoring run
emits the retraining event (its deployment trigger, :mod:`.events`); ``scheduled-monitoring``
runs the monitoring flow (:mod:`.monitoring`) every ``monitoring.schedule_hours``.

Needs a running Prefect server (`prefect server start`; the temporary server does not schedule)
with ``PREFECT_API_URL`` pointing at it, a process work pool (`prefect work-pool create
financemath-pool --type process`) and a worker (`prefect worker start --pool financemath-pool`).
The deployment pulls its code from this checkout (no image is built), so the worker must run on
a machine that sees the same folder. `prefect.yaml` at the repo root describes the same
deployments for `prefect deploy --all`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from financemath_mlops.errors import StageError
from financemath_mlops.flows.events import retrain_trigger

DEPLOYMENT_NAME = "nightly-retrain"
DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_WORK_POOL = "financemath-pool"
ENTRYPOINT = "src/financemath_mlops/flows/pipeline.py:financemath_pipeline"
MONITORING_DEPLOYMENT = "scheduled-monitoring"
MONITORING_ENTRYPOINT = "src/financemath_mlops/flows/monitoring.py:financemath_monitoring"


class DeploymentError(StageError):
    """The deployment cannot be registered; the message says what to start or create."""


def project_root() -> Path:
    return Path(__file__).resolve().parents[3]


def deploy(
    parameters: dict[str, Any],
    cron: str | None = None,
    work_pool: str = DEFAULT_WORK_POOL,
    name: str = DEPLOYMENT_NAME,
    timezone: str = DEFAULT_TIMEZONE,
    monitoring_hours: float | None = None,
) -> str:
    """Register (or update) both deployments, code pulled from this checkout; the retrain's id.

    Parameters left as None are not stored, so the flow's defaults (the config) apply. The
    monitoring deployment runs every ``monitoring_hours`` (default: ``monitoring.schedule_hours``
    of the config in ``parameters``).
    """
    from prefect import flow
    from prefect.schedules import Cron, Interval
    from prefect.settings import get_current_settings

    from financemath_mlops.config import load_settings

    api_url = get_current_settings().api.url
    if not api_url:
        raise DeploymentError(
            "deploying needs a running Prefect server (the temporary one does not schedule): "
            "run `prefect server start`, then export PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    source_flow = flow.from_source(source=str(project_root()), entrypoint=ENTRYPOINT)
    try:
        deployment_id = source_flow.deploy(
            name=name,
            work_pool_name=work_pool,
            schedules=[Cron(cron or DEFAULT_CRON, timezone=timezone)],
            parameters={k: v for k, v in parameters.items() if v is not None},
            description="Retrain, evaluate and promote the FinanceMath regressor",
            tags=["financemath", "retraining"],
            triggers=[retrain_trigger()],
            print_next_steps=False,
            ignore_warnings=True,
        )
    except ValueError as exc:
        if "work pool" not in str(exc):
            raise
        raise DeploymentError(
            f"{exc} On {api_url}: `prefect work-pool create {work_pool} --type process`"
        ) from None
    config = parameters.get("config")
    hours = monitoring_hours or load_settings(config).monitoring.schedule_hours
    monitoring_flow = flow.from_source(source=str(project_root()), entrypoint=MONITORING_ENTRYPOINT)
    monitoring_flow.deploy(
        name=MONITORING_DEPLOYMENT,
        work_pool_name=work_pool,
        schedules=[Interval(timedelta(hours=hours), timezone=timezone)],
        parameters={k: parameters.get(k) for k in ("config", "tracking_uri") if parameters.get(k)},
        description="Drift and performance reports; asks for retraining on evidence",
        tags=["financemath", "monitoring"],
        print_next_steps=False,
        ignore_warnings=True,
    )
    return str(deployment_id)
