"""Scheduled retraining: deploy the pipeline flow to a process work pool with a cron schedule.

Needs a running Prefect server (`prefect server start`; the temporary server does not schedule)
with ``PREFECT_API_URL`` pointing at it, a process work pool (`prefect work-pool create
financemath-pool --type process`) and a worker (`prefect worker start --pool financemath-pool`).
The deployment pulls its code from this checkout (no image is built), so the worker must run on
a machine that sees the same folder. `prefect.yaml` at the repo root describes the same
deployment for `prefect deploy --all`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from financemath_mlops.cli import StageError

DEPLOYMENT_NAME = "nightly-retrain"
DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_WORK_POOL = "financemath-pool"
ENTRYPOINT = "src/financemath_mlops/flows/pipeline.py:financemath_pipeline"


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
) -> str:
    """Register (or update) the deployment, code pulled from this checkout; returns its id.

    Parameters left as None are not stored, so the flow's defaults (the config) apply.
    """
    from prefect import flow
    from prefect.schedules import Cron
    from prefect.settings import get_current_settings

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
            print_next_steps=False,
            ignore_warnings=True,
        )
    except ValueError as exc:
        if "work pool" not in str(exc):
            raise
        raise DeploymentError(
            f"{exc} On {api_url}: `prefect work-pool create {work_pool} --type process`"
        ) from None
    return str(deployment_id)
