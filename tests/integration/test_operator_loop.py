"""The operator's loop end to end, with real processes on 127.0.0.1 (all stopped afterwards).

The service (uvicorn, trained sample model @champion) takes a bounded burst of drifted traffic;
the monitoring flow runs against a real `prefect server`; a real Prometheus scrapes the service
and evaluates our rules; a real Alertmanager (Debian `prometheus-alertmanager`) delivers the
alert to a webhook receiver this test runs; the retraining deployment's trigger starts a flow run.
The test passes once that flow run exists (no worker runs it). It prints the two latencies the
issue asks for: drifted traffic -> delivered alert, and -> created retraining run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from financemath_mlops.synthetic.sample import generate_sample
from tests.helpers import (
    REPO_ROOT,
    VENV_BIN,
    free_port,
    start_process,
    stop_process_group,
    wait_for,
)
from tests.integration.alerting import WebhookReceiver, alertmanager_config
from tests.integration.prefect_server import QUIET_SERVER_ENV, deploy_to_new_pool, flow_runs_of

# Minutes on a loaded 2-core machine: its own journey, `make test-loop` (not in `make test`).
pytestmark = [pytest.mark.integration, pytest.mark.loop]

MONITORING = REPO_ROOT / "monitoring"
POOL = "financemath-loop-pool"
BURST_ROWS = 120  # 12 batch requests of 10 records
SHIFTED_TOPICS = {"Accounting": 5, "Risk Management": 3, "Market Analysis & Economics": 1}
PREFECT_ENV = {
    **QUIET_SERVER_ENV,
    "PREFECT_API_ENABLE_METRICS": "true",  # Prometheus scrapes it
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # only the trigger creates runs
}


@pytest.fixture(scope="module")
def loop(trained_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Prefect server, service, Alertmanager (+ receiver) and Prometheus, wired together."""
    prometheus_bin = shutil.which("prometheus")
    alertmanager_bin = shutil.which("prometheus-alertmanager")
    if prometheus_bin is None or alertmanager_bin is None:
        pytest.skip("needs Debian's `prometheus` and `prometheus-alertmanager` packages")
    work = tmp_path_factory.mktemp("operator-loop")
    processes: list[subprocess.Popen[Any]] = []
    receiver = WebhookReceiver()
    receiver.thread.start()
    ports = {name: free_port() for name in ("prefect", "api", "alertmanager", "prometheus")}
    api_url = f"http://127.0.0.1:{ports['prefect']}/api"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FMOPS_", "PREFECT_"))}
    prefect_env = {**base_env, **PREFECT_ENV, "PREFECT_HOME": str(work / "prefect-home")}
    service_env = {
        **base_env,
        **trained_model.env,
        "FMOPS_CONFIG": str(REPO_ROOT / "configs" / "default.yaml"),
        "FMOPS_SERVING__MODEL_NAME": trained_model.model_name,
        "FMOPS_SERVING__ALIAS": "champion",
        "FMOPS_PATHS__REPORTS_DIR": str(work / "reports"),
        "FMOPS_PATHS__PREDICTIONS_DIR": str(work / "predictions"),
        "FMOPS_PATHS__HF_CACHE_DIR": str(REPO_ROOT / ".cache" / "hf"),
        "FMOPS_MONITORING__LOG_ROTATE_SECONDS": "1",
    }
    service_env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    def start(name: str, env: dict[str, str] | None, command: list[str]) -> subprocess.Popen[Any]:
        processes.append(start_process(command, env, work, work / f"{name}.log"))
        return processes[-1]

    try:
        prefect = start("prefect", prefect_env,
            [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
             "--port", str(ports["prefect"])],
        )  # fmt: skip
        service = start("uvicorn", service_env,
            [sys.executable, "-m", "uvicorn", "financemath_mlops.serving.app:app",
             "--host", "127.0.0.1", "--port", str(ports["api"])],
        )  # fmt: skip

        (work / "alertmanager.yml").write_text(alertmanager_config(receiver.url))
        start("alertmanager", None,
            [alertmanager_bin, f"--config.file={work / 'alertmanager.yml'}",
             f"--storage.path={work / 'am-data'}", "--cluster.listen-address=",
             f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--log.level=warn"],
        )  # fmt: skip

        config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(MONITORING / "prometheus" / "alerts.yml")]
        config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
            f"127.0.0.1:{ports['alertmanager']}"
        ]
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        jobs["financemath-api"]["static_configs"][0]["targets"] = [f"127.0.0.1:{ports['api']}"]
        jobs["prefect"].pop("dns_sd_configs")
        jobs["prefect"]["static_configs"] = [{"targets": [f"127.0.0.1:{ports['prefect']}"]}]
        config["scrape_configs"] = [jobs["financemath-api"], jobs["prefect"]]
        (work / "prometheus.yml").write_text(yaml.safe_dump(config))
        start("prometheus", None,
            [prometheus_bin, f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'tsdb'}", "--log.level=warn",
             f"--web.listen-address=127.0.0.1:{ports['prometheus']}"],
        )  # fmt: skip

        wait_for(lambda: httpx.get(f"{api_url}/health", timeout=2).status_code == 200, 180,
                 "the Prefect server to start", prefect)  # fmt: skip
        api = f"http://127.0.0.1:{ports['api']}"
        wait_for(lambda: httpx.get(f"{api}/ready", timeout=2).status_code == 200, 180,
                 "the service to load the model", service)  # fmt: skip
        yield {
            "work": work, "api": api, "prefect_api": api_url, "ports": ports,
            "receiver": receiver, "service_env": service_env, "prefect_env": prefect_env,
            "prometheus": f"http://127.0.0.1:{ports['prometheus']}/api/v1",
            "alertmanager": f"http://127.0.0.1:{ports['alertmanager']}/api/v2",
        }  # fmt: skip
    except AssertionError as exc:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in work.glob("*.log"))
        raise AssertionError(f"{exc}\n{logs}") from None
    finally:
        for process in reversed(processes):
            stop_process_group(process)
        receiver.server.shutdown()
        receiver.server.server_close()


def drifted_batches() -> list[dict[str, Any]]:
    """A changed topic mix with 10x amounts: the drift the monitoring tests detect."""
    rows = generate_sample(BURST_ROWS, seed=3, topic_weights=SHIFTED_TOPICS, value_scale=10.0)
    items = [{"question": r["question"], "tables": r["tables"], "topic": r["topic"]} for r in rows]
    return [{"items": items[i : i + 10]} for i in range(0, len(items), 10)]


def test_drifted_traffic_raises_an_alert_that_is_delivered_and_starts_retraining(loop):
    retrain_id = deploy_to_new_pool(loop["prefect_api"], POOL, {"source": "sample", "rows": 200})
    assert flow_runs_of(loop["prefect_api"], retrain_id) == []  # no schedule fires here

    started = time.monotonic()
    with httpx.Client(base_url=loop["api"], timeout=60) as client:
        for batch in drifted_batches():
            assert client.post("/predict/batch", json=batch).status_code == 200

        def logged() -> bool:
            text = client.get("/metrics").text
            line = next(
                x for x in text.splitlines() if x.startswith("fmops_prediction_log_written")
            )
            return float(line.split()[-1]) >= BURST_ROWS

        wait_for(logged, 60, "the prediction log to write the burst")
    env = {**loop["service_env"], **loop["prefect_env"], "PREFECT_API_URL": loop["prefect_api"]}
    flow_run = subprocess.run(
        [sys.executable, "-m", "financemath_mlops.flows.monitoring", "--window-hours", "1"],
        env=env, cwd=loop["work"], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert flow_run.returncode == 0, flow_run.stdout[-3000:] + flow_run.stderr[-3000:]
    assert "drift        EVIDENCE" in flow_run.stdout, flow_run.stdout
    assert "retraining requested: yes" in flow_run.stdout
    report_done = time.monotonic()

    delivered_at, alert = wait_for(lambda: loop["receiver"].alert("FinanceMathInputDrift"), 120,
                                   "Alertmanager to deliver FinanceMathInputDrift")  # fmt: skip
    assert alert["labels"]["job"] == "financemath-api" and alert["labels"]["severity"] == "warning"
    runs = wait_for(lambda: flow_runs_of(loop["prefect_api"], retrain_id), 120,
                    "the retraining trigger to create a flow run")  # fmt: skip
    retrain_at = time.monotonic()
    (run,) = runs  # once: the trigger fired for the one request
    assert run.parameters == {"source": "sample", "rows": 200}
    assert run.state_name == "Scheduled"  # waiting for a worker of the pool

    history = [json.loads(x) for x in (loop["work"] / "reports" / "index.jsonl").open()]
    assert [h["kind"] for h in history] == ["drift", "retrain-request"]
    assert history[0]["dataset_drift"] and history[0]["current_rows"] == BURST_ROWS
    assert (Path(history[0]["report"]) / "drift.html").is_file()
    prefect_up = httpx.get(f"{loop['prometheus']}/query", params={"query": 'up{job="prefect"}'})
    assert prefect_up.json()["data"]["result"][0]["value"][1] == "1"  # Prefect's /api/metrics
    print(
        f"\noperator loop: burst of {BURST_ROWS} drifted rows -> monitoring run done at "
        f"{report_done - started:.1f}s, alert delivered at {delivered_at - started:.1f}s, "
        f"retraining run created at {retrain_at - started:.1f}s (<= polling 0.25s)"
    )
