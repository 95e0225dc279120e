"""A real `prefect server` for the tests: a quiet environment, and the client calls they share.

Used by test_prefect_deployment.py (scheduling) and test_operator_loop.py (the retraining
trigger); each starts its own server on a free 127.0.0.1 port with its own PREFECT_HOME.
"""

from __future__ import annotations

from typing import Any

from financemath_mlops.flows import deployment

# Nothing the tests do not need: no UI, analytics, late-run marking, foreman or vacuum.
QUIET_SERVER_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_FOREMAN_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
    "PREFECT_SERVER_SERVICES_DB_VACUUM_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def deploy_to_new_pool(api_url: str, pool: str, parameters: dict[str, Any], **options: Any) -> str:
    """Create a process work pool on the server at `api_url`, then deploy the retraining flow
    to it (our `deployment.deploy`, as an operator runs it); returns the deployment id."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        return deployment.deploy(parameters, work_pool=pool, **options)


def flow_runs_of(api_url: str, deployment_id: str) -> list[Any]:
    """The flow runs the server at `api_url` holds for one deployment (scheduled or started)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id]))
        )
