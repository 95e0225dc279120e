"""Scheduled retraining against a real `prefect server start` on 127.0.0.1 (stopped afterwards)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from financemath_mlops.flows import deployment
from tests.helpers import REPO_ROOT, VENV_BIN, cli_env, free_port, run_ok, running, wait_for
from tests.integration.prefect_server import QUIET_SERVER_ENV, deploy_to_new_pool, flow_runs_of

pytestmark = pytest.mark.integration

POOL = "financemath-test-pool"
SERVER_START_TIMEOUT_S = 120
SCHEDULE_TIMEOUT_S = 60
# Quick scheduling: the scheduler looks at new deployments every second or two.
SERVER_ENV = {
    **QUIET_SERVER_ENV,
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
}


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A real Prefect server with its own PREFECT_HOME; yields (API URL, client environment)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = cli_env(PREFECT_HOME=str(home), **SERVER_ENV)
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    command = [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    with running(command, env, home, log) as server:
        wait_for(
            lambda: httpx.get(f"{api_url}/health", timeout=2).status_code == 200,
            SERVER_START_TIMEOUT_S, "prefect server to be healthy", server, log, interval=0.5,
        )  # fmt: skip
        yield api_url, {**env, "PREFECT_API_URL": api_url}


def test_deployment_gets_nightly_scheduled_runs_on_a_real_server(
    prefect_api: tuple[str, dict[str, str]],
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, _ = prefect_api
    deployment_id = deploy_to_new_pool(api_url, POOL, {"source": "sample", "rows": 200})
    runs = wait_for(lambda: flow_runs_of(api_url, deployment_id), SCHEDULE_TIMEOUT_S,
                    "the scheduler to create the nightly runs", interval=1)  # fmt: skip
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        found = client.read_deployment(deployment_id)
        flow = client.read_flow(found.flow_id)

    assert flow.name == "financemath-pipeline"
    assert found.name == deployment.DEPLOYMENT_NAME
    assert found.work_pool_name == POOL
    assert found.parameters == {"source": "sample", "rows": 200}
    assert found.entrypoint == deployment.ENTRYPOINT
    (schedule,) = found.schedules
    assert schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")

    assert runs, f"no scheduled runs appeared within {SCHEDULE_TIMEOUT_S}s"
    now = datetime.now(UTC)
    for run in runs:
        assert run.state_name == "Scheduled"
        start = run.expected_start_time.astimezone(UTC)
        assert (start.hour, start.minute) == (2, 0) and start > now
        assert run.parameters == {"source": "sample", "rows": 200}


def test_deploy_adds_the_monitoring_schedule_and_the_retraining_trigger(
    prefect_api: tuple[str, dict[str, str]],
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from financemath_mlops.flows import events

    api_url, _ = prefect_api
    retrain_id = deploy_to_new_pool(api_url, POOL + "-loop", {}, monitoring_hours=3)
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        monitoring = client.read_deployment_by_name(
            f"financemath-monitoring/{deployment.MONITORING_DEPLOYMENT}"
        )
        automations = client.read_automations_by_name(events.TRIGGER_NAME)
    (schedule,) = monitoring.schedules
    assert schedule.schedule.interval.total_seconds() == 3 * 3600
    assert monitoring.entrypoint == deployment.MONITORING_ENTRYPOINT
    (automation,) = automations  # re-deploying replaces it, never duplicates
    assert automation.trigger.expect == {events.RETRAIN_REQUESTED}
    (action,) = automation.actions
    assert action.type == "run-deployment" and str(action.deployment_id) == retrain_id


def test_deploy_refuses_a_missing_work_pool_with_the_command_to_create_it(
    prefect_api: tuple[str, dict[str, str]],
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    api_url, _ = prefect_api
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        pytest.raises(deployment.DeploymentError, match="prefect work-pool create no-such-pool"),
    ):
        deployment.deploy({}, work_pool="no-such-pool")


def test_prefect_yaml_deploys_the_same_flow_with_prefect_deploy(
    prefect_api: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    from financemath_mlops.config import MonitoringSettings
    from financemath_mlops.flows.events import trigger_spec

    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    entry, monitoring = spec["deployments"]
    assert entry["entrypoint"] == deployment.ENTRYPOINT
    assert entry["name"] == deployment.DEPLOYMENT_NAME
    assert entry["schedules"] == [{"cron": deployment.DEFAULT_CRON, "timezone": "UTC"}]
    assert entry["work_pool"]["name"] == deployment.DEFAULT_WORK_POOL
    assert entry["triggers"] == [trigger_spec()]
    assert monitoring["name"] == deployment.MONITORING_DEPLOYMENT
    assert monitoring["entrypoint"] == deployment.MONITORING_ENTRYPOINT
    assert monitoring["schedules"][0]["interval"] == MonitoringSettings().schedule_hours * 3600

    # `prefect deploy` itself, on a copy (it may offer to rewrite the file), into a test pool.
    for each in spec["deployments"]:
        each["work_pool"]["name"] = POOL + "-yaml"
    copy = tmp_path / "prefect.yaml"
    copy.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, env = prefect_api
    prefect = str(VENV_BIN / "prefect")
    run_ok(
        [prefect, "work-pool", "create", POOL + "-yaml", "--type", "process"], env=env, timeout=60
    )
    done = run_ok(
        [prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(copy)],
        env=env, cwd=REPO_ROOT, timeout=120,
    )  # fmt: skip
    assert "financemath-pipeline/nightly-retrain" in done.stdout
    assert "financemath-monitoring/scheduled-monitoring" in done.stdout
