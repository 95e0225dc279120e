"""Every page a user opens renders in a real browser with no request leaving the host.

Pages: the service's /docs (Swagger UI) and /redoc, an Evidently drift report made by the
monitoring command, and the MLflow UI page of a run on a tracking server. The three processes
(uvicorn, ``mlflow server``, the drift command) start together in the background, so their
start-up overlaps; each test waits only for the one it needs. Requests are recorded, never
blocked: a request to another host fails the test. On /redoc alone one exception is allowed: a
request the page's own Content-Security-Policy stopped inside the browser (ReDoc's hard-coded
Redocly logo), which never left the machine.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from financemath_mlops.features.rows import hand_features
from financemath_mlops.records import RecordInput
from financemath_mlops.synthetic.sample import generate_sample
from tests.browser.processes import Started, http_ok, start
from tests.helpers import VENV_BIN, cli_env, free_port, stop_process_group

pytestmark = [pytest.mark.integration, pytest.mark.browser]
PlaywrightTimeout = pytest.importorskip("playwright.sync_api").TimeoutError

START_TIMEOUT = 300  # seconds: mlflow server took 50-220 s to start on an overloaded 2-core box
RUN_NAME = "browser-offline-check"


@dataclass
class Background:
    service: Started
    mlflow: Started
    drift: Started
    drift_dir: Path


def feature_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The features stage's table/metadata columns (no embeddings: the report skips them)."""
    return pd.DataFrame([hand_features(RecordInput.from_mapping(r))[0] for r in rows])


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    work = tmp_path_factory.mktemp("browser")
    started: list[Started] = []
    try:
        mlflow_port = free_port()
        mlflow = start(
            "mlflow-server",
            [
                str(VENV_BIN / "mlflow"), "server",
                "--backend-store-uri", f"sqlite:///{work / 'mlflow' / 'mlflow.db'}",
                "--default-artifact-root", str(work / "mlflow" / "artifacts"),
                "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
            ],
            work / "mlflow",
            # telemetry off as in our images; no job runner (another process importing mlflow,
            # which the UI page does not use)
            cli_env(
                MLFLOW_DISABLE_TELEMETRY="true",
                DO_NOT_TRACK="true",
                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
            ),
            http_ok(f"http://127.0.0.1:{mlflow_port}/health"),
        )  # fmt: skip
        mlflow.base_url = f"http://127.0.0.1:{mlflow_port}"
        started.append(mlflow)

        reference, current = work / "reference.parquet", work / "current.parquet"
        feature_table(generate_sample(200, seed=1)).to_parquet(reference)
        feature_table(generate_sample(200, seed=2, value_scale=10.0)).to_parquet(current)
        drift_dir = work / "drift-report"
        drift = start(
            "monitoring-drift",
            [
                sys.executable, "-m", "financemath_mlops.monitoring", "drift",
                "--reference", str(reference), "--current", str(current),
                "--output", str(drift_dir), "--no-mlflow", "--no-publish",
            ],
            work,
            cli_env(),
            lambda: (drift_dir / "drift.json").is_file() and drift_dir.joinpath("drift.html").is_file(),
        )  # fmt: skip
        started.append(drift)

        service_port = free_port()
        service = start(
            "uvicorn",
            [
                sys.executable, "-m", "uvicorn", "financemath_mlops.serving.app:app",
                "--host", "127.0.0.1", "--port", str(service_port),
            ],
            work / "service",
            cli_env(
                FMOPS_SERVING__MODEL_URI="nowhere:/model",  # /docs needs no model
                FMOPS_MLFLOW__TRACKING_URI=f"sqlite:///{work / 'service' / 'mlflow.db'}",
                FMOPS_MONITORING__PREDICTION_LOG="false",
            ),
            http_ok(f"http://127.0.0.1:{service_port}/health"),
        )  # fmt: skip
        service.base_url = f"http://127.0.0.1:{service_port}"
        started.append(service)
        yield Background(service, mlflow, drift, drift_dir)
    finally:
        for process in started:
            stop_process_group(process.process)


def assert_nothing_left_the_host(log: Any, origin: str, allow_csp_blocked: bool = False) -> None:
    outside = log.outside(origin)
    if allow_csp_blocked:  # stopped by the page's own policy before any connection was made
        outside = [r for r in outside if r.failure != "csp"]
    assert not outside, f"requests outside {origin}:\n" + "\n".join(r.url for r in outside)
    assert log.requests, "no request recorded at all: the recorder is not attached"


def test_swagger_ui_renders_every_operation_from_the_service_alone(background, page):
    tab, log = page
    background.service.wait(START_TIMEOUT)
    base = background.service.base_url
    operations = sum(
        len(methods) for methods in httpx.get(f"{base}/openapi.json").json()["paths"].values()
    )
    tab.goto(f"{base}/docs")
    tab.wait_for_selector(".opblock")
    assert tab.locator(".opblock").count() == operations

    predict = tab.locator(".opblock-post").filter(
        has=tab.locator(".opblock-summary-path", has_text="/predict")
    )
    predict = predict.filter(has_not=tab.locator(".opblock-summary-path", has_text="/batch"))
    predict.locator(".opblock-summary-control").click()
    body = predict.locator(".opblock-body")
    body.locator(".body-param__example, .example").first.wait_for()
    assert '"question"' in body.inner_text() and '"tables"' in body.inner_text()

    # Try it out -> Execute: the call goes to the service (no model here: 503 with the reason).
    predict.get_by_role("button", name="Try it out").click()
    predict.get_by_role("button", name="Execute").click()
    status = predict.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith(("503", "200"))
    assert f"{base}/predict" in [r.url for r in log.requests]

    assert_nothing_left_the_host(log, base)
    loaded = {r.url.removeprefix(base) for r in log.requests}
    assert {"/docs", "/openapi.json", "/docs-assets/swagger-ui-bundle.js"} <= loaded


def test_redoc_renders_the_api_from_the_service_alone(background, page):
    tab, log = page
    background.service.wait(START_TIMEOUT)
    base = background.service.base_url
    paths = httpx.get(f"{base}/openapi.json").json()["paths"]
    tab.goto(f"{base}/redoc")
    tab.get_by_text(paths["/predict"]["post"]["summary"]).first.wait_for()
    operations = sum(len(methods) for methods in paths.values())
    count_sections = (
        "() => new Set([...document.querySelectorAll(\"[data-section-id^='operation/']\")]"
        ".map(e => e.dataset.sectionId)).size"
    )
    with contextlib.suppress(PlaywrightTimeout):  # ReDoc renders progressively
        tab.wait_for_function(f"({count_sections})() >= {operations}", timeout=30_000)
    assert tab.evaluate(count_sections) == operations  # one section per operation
    tab.wait_for_timeout(500)  # the side menu's images come after the first paint
    assert_nothing_left_the_host(log, base, allow_csp_blocked=True)
    blocked = [r.url for r in log.requests if r.failure == "csp"]
    assert all("redoc" in url or "redocly" in url for url in blocked), blocked


def test_the_evidently_drift_report_renders_offline(background, page):
    tab, log = page
    background.drift.wait(START_TIMEOUT)
    summary = json.loads((background.drift_dir / "drift.json").read_text())["summary"]
    report = background.drift_dir / "drift.html"
    tab.goto(report.as_uri())
    tab.get_by_text("Dataset Drift", exact=True).first.wait_for()
    tab.get_by_text("Drift is detected for").first.wait_for()
    text = tab.locator("body").inner_text()
    assert f"({summary['drifted']} out of {summary['columns']})" in text
    assert tab.locator("svg").count() >= 10  # the per-column histograms were drawn
    assert_nothing_left_the_host(log, "file://")


def test_the_mlflow_ui_shows_a_run_offline(background, page):
    tab, log = page
    background.mlflow.wait(START_TIMEOUT)
    run = create_run(background.mlflow.base_url)
    tab.goto(
        f"{background.mlflow.base_url}/#/experiments/{run['experiment_id']}/runs/{run['run_id']}"
    )
    tab.get_by_text(RUN_NAME).first.wait_for()
    tab.get_by_text("holdout_mae").first.wait_for()
    tab.get_by_text("num_leaves").first.wait_for()
    tab.wait_for_timeout(1000)  # late chunks and the UI's telemetry worker
    assert_nothing_left_the_host(log, background.mlflow.base_url)


def create_run(base_url: str) -> dict[str, str]:
    """A finished run with a metric and a parameter, through MLflow's REST API."""
    api = f"{base_url}/api/2.0/mlflow"
    now = int(time.time() * 1000)
    with httpx.Client(timeout=60) as client:
        experiment_id = client.post(
            f"{api}/experiments/create", json={"name": "browser-offline"}
        ).json()["experiment_id"]
        run_id = client.post(
            f"{api}/runs/create",
            json={"experiment_id": experiment_id, "run_name": RUN_NAME, "start_time": now},
        ).json()["run"]["info"]["run_id"]
        client.post(
            f"{api}/runs/log-batch",
            json={
                "run_id": run_id,
                "metrics": [{"key": "holdout_mae", "value": 1.5, "timestamp": now, "step": 0}],
                "params": [{"key": "num_leaves", "value": "31"}],
            },
        ).raise_for_status()
        client.post(
            f"{api}/runs/update", json={"run_id": run_id, "status": "FINISHED", "end_time": now}
        ).raise_for_status()
    return {"experiment_id": experiment_id, "run_id": run_id}
