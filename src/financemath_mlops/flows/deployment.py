"""Scheduled retraining: deploy the pipeline flow to a process work pool with a cron schedule.

Needs a running Prefect server (`prefect server start`; the temporary server does not schedule)
and a worker (`prefect worker start --pool financemath-pool`). `prefect.yaml` at the repo root
describes the same deployment for `prefect deploy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEPLOYMENT_NAME = "nightly-retrain"
DEFAULT_CRON = "0 2 * * *"
ENTRYPOINT = "src/financemath_mlops/flows/pipeline.py:financemath_pipeline"


def project_root() -> Path:
    return Path(__file__).resolve().parents[3]


def deploy(
    parameters: dict[str, Any],
    cron: str | None = None,
    work_pool: str = "financemath-pool",
    name: str = DEPLOYMENT_NAME,
) -> str:
    """Register the deployment (code pulled from this checkout); returns the deployment id."""  # fmt: skip
    from prefect import flow

    source_flow = flow.from_source(source=str(project_root()), entrypoint=ENTRYPOINT)
    deployment_id = source_flow.deploy(
        name=name,
        work_pool_name=work_pool,
        cron=cron or DEFAULT_CRON,
        parameters={k: v for k, v in parameters.items() if v is not None},
        description="Retrain, evaluate and promote the FinanceMath regressor",
        tags=["financemath", "retraining"],
        print_next_steps=False,
    )
    return str(deployment_id)
