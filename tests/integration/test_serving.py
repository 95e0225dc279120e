"""The prediction service end to end: real uvicorn, a model trained on the synthetic sample, MLflow.

One server per scenario, shared by the tests of this module: the main one serves the trained model
with an API key; a second one starts on a model name that does not exist yet (readiness without a
model, then recovery and hot swaps through /admin/reload). Nothing of ours is mocked.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from financemath_mlops.features.rows import FEATURE_COLUMNS
from financemath_mlops.records import RecordInput
from financemath_mlops.serving.schemas import EXAMPLE_RECORD
from tests.helpers import (
    free_port,
    metric_value,
    server_env,
    start_process,
    stop_process_group,
    wait_for,
)

pytestmark = pytest.mark.integration

API_KEY = "test-key-" + uuid.uuid4().hex
MAX_BODY_BYTES = 262_144
HEAVY_MODULES = ("torch", "sentence_transformers", "prefect", "evidently")
FUZZ_SEED = 20_240_601
FUZZ_EXAMPLES = 150


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    base_url: str
    port: int
    process: subprocess.Popen[Any]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)


def start_server(
    env: dict[str, str], workdir: Path, name: str, workers: int = 1, wait: str = "/ready"
) -> Server:
    """`uvicorn ...:app` on a free port, or `python -m financemath_mlops.serving` for workers > 1;
    returns once `wait` answers 200 (the model loads in the background: /ready, not /health)."""
    port = free_port()
    log_path = workdir / f"{name}.log"
    if workers == 1:
        command = ["-m", "uvicorn", "financemath_mlops.serving.app:app", "--log-level", "info"]
    else:
        command = ["-m", "financemath_mlops.serving", "--workers", str(workers)]
    command = [sys.executable, *command, "--host", "127.0.0.1", "--port", str(port)]
    process = start_process(command, env, workdir, log_path)
    server = Server(f"http://127.0.0.1:{port}", port, process, log_path)
    try:
        wait_for(
            lambda: httpx.get(f"{server.base_url}{wait}", timeout=2).status_code == 200,
            120,
            f"uvicorn ({name}) to answer {wait}",
            process,
            log_path,
        )
    except AssertionError:
        stop_process_group(process)
        raise
    return server


@pytest.fixture(scope="module")
def server(trained_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The trained model @champion, with an API key and a small body budget."""
    env = server_env(
        trained_model,
        model_name=trained_model.model_name,
        alias="champion",
        api_key=API_KEY,
        max_body_bytes=str(MAX_BODY_BYTES),
    )
    started = start_server(env, tmp_path_factory.mktemp("serving"), "main")
    yield started
    stop_process_group(started.process)


@pytest.fixture(scope="module")
def auth() -> dict[str, str]:
    return {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def records(trained_model: Any) -> list[dict[str, Any]]:
    lines = trained_model.ingested_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def request_body(record: dict[str, Any]) -> dict[str, Any]:
    return {"question": record["question"], "tables": record["tables"], "topic": record["topic"]}


# --- endpoints --------------------------------------------------------------------------------


def test_health_ready_and_model_describe_the_served_model(server: Server, trained_model, auth):
    with server.client() as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["model"] == {
            "name": trained_model.model_name,
            "version": trained_model.version,
            "alias": "champion",
            "run_id": trained_model.run_id,
        }
        info = client.get("/model", headers=auth).json()
    assert info["uri"] == f"models:/{trained_model.model_name}/{trained_model.version}"
    assert info["feature_columns"] == list(FEATURE_COLUMNS)
    assert info["embedding"]["backend"] == "onnx"
    assert info["embedding"]["model_id"].endswith("all-MiniLM-L6-v2")
    assert info["training_metrics"], "training metrics of the run should be reported"
    assert all(isinstance(v, float) for v in info["training_metrics"].values())


def test_predict_returns_a_number_with_model_and_request_id(server: Server, records, auth):
    record = next(r for r in records if r["tables"])
    with server.client(headers=auth) as client:
        response = client.post(
            "/predict", json=request_body(record), headers={"X-Request-ID": "client-id-42"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert math.isfinite(body["prediction"])
    assert body["request_id"] == response.headers["x-request-id"] != "client-id-42"  # ours
    assert response.headers["x-client-request-id"] == "client-id-42"  # theirs, beside it
    assert body["model"]["alias"] == "champion"
    assert 0 < body["latency_ms"] < 10_000
    assert body["warnings"] == []


def test_an_insane_request_id_is_replaced(server: Server, auth):
    with server.client(headers=auth) as client:
        response = client.post(
            "/predict", json=EXAMPLE_RECORD, headers={"X-Request-ID": "two words; and <html>"}
        )
    assert response.status_code == 200
    generated = response.headers["x-request-id"]
    assert generated == response.json()["request_id"] and len(generated) == 32


def test_unparseable_tables_are_accepted_and_reported(server: Server, auth):
    body = {"question": "What is the total?", "tables": ["not a table at all", ""], "topic": "x"}
    with server.client(headers=auth) as client:
        response = client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    warnings = response.json()["warnings"]
    assert any(w.startswith("table 0") for w in warnings)
    assert any("unknown topic" in w for w in warnings)


def test_batch_predicts_every_item_in_order(server: Server, records, auth):
    items = [request_body(r) for r in records[:5]]
    with server.client(headers=auth) as client:
        batch = client.post("/predict/batch", json={"items": items})
        singles = [client.post("/predict", json=item).json()["prediction"] for item in items]
    assert batch.status_code == 200, batch.text
    predictions = [p["prediction"] for p in batch.json()["predictions"]]
    assert len(predictions) == 5
    # Batching pads questions to a common length: float32 noise only, no reordering.
    np.testing.assert_allclose(predictions, singles, rtol=1e-4)


# --- auth -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic " + API_KEY}, 401),
        ({"X-API-Key": API_KEY}, 200),
        ({"Authorization": f"Bearer {API_KEY}"}, 200),
    ],
)
def test_prediction_needs_the_api_key(server: Server, headers, status):
    with server.client() as client:
        response = client.post("/predict", json=EXAMPLE_RECORD, headers=headers)
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"


def test_probes_and_metrics_stay_open_and_the_key_is_never_logged(server: Server):
    with server.client() as client:
        for path in ("/health", "/ready", "/metrics"):
            assert client.get(path).status_code == 200, path
        assert client.get("/model").status_code == 401
        assert client.post("/admin/reload").status_code == 401
        client.post("/predict", json=EXAMPLE_RECORD, headers={"X-API-Key": API_KEY + "x"})
    assert API_KEY not in server.log()


# --- bad input ------------------------------------------------------------------------------

JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/predict", {"json": {"tables": []}}, 422, "validation_error"),
        ("POST", "/predict", {"json": {"question": ""}}, 422, "validation_error"),
        ("POST", "/predict", {"json": {"question": "   "}}, 422, "validation_error"),
        ("POST", "/predict", {"json": {"question": "q" * 8001}}, 422, "validation_error"),
        ("POST", "/predict", {"json": {"question": "q", "tables": ["t"] * 11}}, 422,
         "validation_error"),
        ("POST", "/predict", {"json": {"question": "q", "tables": ["t" * 20_001]}}, 422,
         "validation_error"),
        ("POST", "/predict", {"json": {"question": 5, "tables": "x"}}, 422, "validation_error"),
        ("POST", "/predict", {"json": {"question": "q", "extra": 1}}, 422, "validation_error"),
        ("POST", "/predict", {"json": ["question"]}, 422, "validation_error"),
        ("POST", "/predict/batch", {"json": {"items": []}}, 422, "validation_error"),
        ("POST", "/predict/batch", {"json": {"items": [{"question": "q"}] * 65}}, 422,
         "validation_error"),
        ("POST", "/predict", {"content": b"\xff\xfe{}", "headers": JSON}, 400, "invalid_encoding"),
        ("POST", "/predict", {"content": b'{"question": "q",', "headers": JSON}, 400,
         "invalid_json"),
        ("POST", "/predict", {"content": b"[" * 5000 + b"]" * 5000, "headers": JSON}, 400,
         "too_deep"),
        ("POST", "/predict", {"content": b'{"question": "q"}'}, 415, "unsupported_media_type"),
        ("POST", "/predict", {"content": b"x" * (MAX_BODY_BYTES + 1), "headers": JSON}, 413,
         "payload_too_large"),
        ("GET", "/nowhere", {}, 404, "not_found"),
        ("DELETE", "/predict", {}, 405, "method_not_allowed"),
        ("GET", "/predict", {}, 405, "method_not_allowed"),
    ],
)  # fmt: skip
def test_bad_requests_get_a_4xx_in_the_one_error_shape(
    server: Server, auth, method, path, kwargs, status, code
):
    kwargs = dict(kwargs)
    headers = {**auth, **kwargs.pop("headers", {})}
    with server.client() as client:
        response = client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers["x-request-id"]


def test_a_streamed_body_over_the_budget_is_cut_off_with_413(server: Server, auth):
    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes are counted as they come
        for _ in range(MAX_BODY_BYTES // 8192 + 8):
            yield b" " * 8192

    with server.client(headers={**auth, **JSON}) as client:
        response = client.post("/predict", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_validation_errors_name_the_field_without_echoing_it(server: Server, auth):
    secret_text = "s3cr3t " * 2000
    with server.client(headers=auth) as client:
        response = client.post("/predict", json={"question": secret_text * 2, "tables": [7]})
    assert response.status_code == 422
    locs = [d["loc"] for d in response.json()["error"]["details"]]
    assert ["body", "tables", 0] in locs
    assert "s3cr3t" not in response.text


# --- metrics --------------------------------------------------------------------------------


def test_metrics_count_traffic_and_describe_the_model(server: Server, trained_model, auth):
    with server.client() as client:
        before = client.get("/metrics").text
        for _ in range(3):
            assert client.post("/predict", json=EXAMPLE_RECORD, headers=auth).status_code == 200
        assert client.post("/predict", json={"question": ""}, headers=auth).status_code == 422
        after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def grew(metric: str, by: float, **labels: str) -> bool:
        return metric_value(text, metric, **labels) - metric_value(before, metric, **labels) >= by

    ok = {"endpoint": "/predict", "method": "POST", "status": "200"}
    assert grew("fmops_http_requests_total", 3, **ok)
    assert grew("fmops_http_requests_total", 1, endpoint="/predict", status="422")
    assert grew("fmops_errors_total", 1, type="validation_error")
    assert grew("fmops_http_request_duration_seconds_count", 4, endpoint="/predict")
    assert grew("fmops_embedding_duration_seconds_count", 3)
    assert grew("fmops_inference_duration_seconds_count", 3)
    assert grew("fmops_prediction_value_count", 3)
    assert "fmops_http_requests_in_flight" in text
    assert metric_value(text, "fmops_model_ready") == 1
    info = {"name": trained_model.model_name, "version": trained_model.version}
    assert metric_value(text, "fmops_model_info", alias="champion", **info) == 1


def test_metrics_add_up_over_several_workers(trained_model, tmp_path, auth):
    """With PROMETHEUS_MULTIPROC_DIR, /metrics on any worker counts the requests of all."""
    env = server_env(trained_model, model_name=trained_model.model_name, api_key=API_KEY)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prometheus")
    (tmp_path / "prometheus").mkdir()
    server = start_server(env, tmp_path, "workers", workers=2)
    try:

        def workers_loaded() -> float:
            text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
            return metric_value(text, "fmops_model_reloads_total", result="loaded")

        wait_for(lambda: workers_loaded() == 2, 90, "both workers to load the model")
        for _ in range(12):  # a new connection each time, so the kernel spreads them
            response = httpx.post(f"{server.base_url}/predict", json=EXAMPLE_RECORD, headers=auth)
            assert response.status_code == 200
        text = httpx.get(f"{server.base_url}/metrics").text
    finally:
        stop_process_group(server.process)
    ok = {"endpoint": "/predict", "method": "POST", "status": "200"}
    assert metric_value(text, "fmops_http_requests_total", **ok) == 12
    assert metric_value(text, "fmops_embedding_duration_seconds_count") == 12
    assert metric_value(text, "fmops_model_ready") == 1


# --- parity with training -------------------------------------------------------------------


def test_serving_features_and_predictions_match_training(server: Server, trained_model, records):
    """Same record -> same feature row as the training table, and the pyfunc's prediction."""
    import pandas as pd

    from financemath_mlops import runs
    from financemath_mlops.config import ServingSettings
    from financemath_mlops.features.build import ID_COLUMN
    from financemath_mlops.serving.model_holder import ModelHolder

    uri = f"models:/{trained_model.model_name}/{trained_model.version}"
    runs.configure(trained_model.settings.mlflow)
    sample = [r for r in records if r["tables"]][:3] + [r for r in records if not r["tables"]][:2]
    model = (
        ModelHolder(ServingSettings(model_uri=uri), threads=2, concurrent_threads=1).load().model
    )  # as served
    # The lone-call session spins within a run only; the one for overlapping calls never.
    assert (model.predictor.embedder.spinning, model.concurrent_predictor.embedder.spinning) == (
        "within_run",
        "never",
    )
    inputs = [RecordInput.from_mapping(r) for r in sample]
    served_rows = np.vstack(
        [model.predictor.predict([x], keep_features=True).features for x in inputs]
    )
    overlapping = model.concurrent_predictor.predict(inputs, keep_features=True).features
    np.testing.assert_allclose(overlapping, served_rows, rtol=1e-5, atol=1e-6)

    table = pd.read_parquet(trained_model.features_path).set_index(ID_COLUMN)
    trained_rows = table.loc[[r["question_id"] for r in sample], list(FEATURE_COLUMNS)].to_numpy()
    assert np.array_equal(np.isnan(served_rows), np.isnan(trained_rows))
    diff = np.nanmax(np.abs(served_rows - trained_rows))
    assert diff < 1e-5, f"serving feature rows differ from training by up to {diff}"

    pyfunc = runs.load_pyfunc(uri)
    with server.client(headers={"X-API-Key": API_KEY}) as client:
        for record in sample:
            body = request_body(record)
            served = client.post("/predict", json=body).json()["prediction"]
            frame = pd.DataFrame([body])
            expected = float(pyfunc.predict(frame)["prediction"].iloc[0])
            # The service may use another ONNX thread count than the pyfunc: float32 noise only.
            assert served == pytest.approx(expected, rel=1e-6, abs=1e-9)


# --- no torch --------------------------------------------------------------------------------


def test_serving_imports_no_torch_prefect_or_evidently(trained_model, tmp_path):
    code = textwrap.dedent(
        f"""
        import json, sys, time
        from fastapi.testclient import TestClient
        from financemath_mlops.serving.app import create_app
        with TestClient(create_app()) as client:
            for _ in range(1200):  # the model loads in the background
                ready = client.get("/ready")
                if ready.status_code == 200:
                    break
                time.sleep(0.1)
            assert ready.status_code == 200, ready.text
            predicted = client.post("/predict", json={EXAMPLE_RECORD!r})
            assert predicted.status_code == 200, predicted.text
        print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))
        """
    )
    env = server_env(trained_model, model_name=trained_model.model_name, alias="champion")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# --- fuzzing --------------------------------------------------------------------------------


def test_fuzzing_the_openapi_schema_finds_no_server_error(server: Server):
    """Schemathesis, seeded, against our own schema: valid and invalid inputs, zero 5xx.

    Every response must also match the schema: documented status code, content type and body.
    """
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    seen: dict[int, int] = {}
    failures: list[str] = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @hypothesis.seed(FUZZ_SEED)
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=schema.as_strategy(generation_mode=mode))
        def fuzz(case: Any) -> None:
            try:
                response = case.call_and_validate(
                    headers={"X-API-Key": API_KEY}, timeout=30, checks=checks
                )
            except Exception as exc:  # collect, so one run reports every kind of failure
                failures.append(f"{case.method} {case.path}: {str(exc)[:600]}")
                return
            seen[response.status_code] = seen.get(response.status_code, 0) + 1

        fuzz()
    assert not failures, "\n".join(failures[:10])
    assert sum(seen.values()) >= FUZZ_EXAMPLES, seen
    assert 200 in seen and any(400 <= status < 500 for status in seen), seen


# --- Prometheus -----------------------------------------------------------------------------


def test_a_real_prometheus_scrapes_the_request_counter(server: Server, tmp_path, auth):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the `prometheus` binary is not installed (Debian package `prometheus`)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        textwrap.dedent(
            f"""
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: financemath-serving
                metrics_path: /metrics
                static_configs:
                  - targets: ["127.0.0.1:{server.port}"]
            """
        )
    )
    log = tmp_path / "prometheus.log"
    process = start_process(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        None, tmp_path, log,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1/query"
    query = 'sum(fmops_http_requests_total{endpoint="/predict",status="200"})'

    def scraped() -> float | None:
        response = httpx.get(api, params={"query": query}, timeout=5)
        if response.status_code != 200:  # "Service Unavailable" while Prometheus starts up
            return None
        result = response.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    try:
        with server.client(headers=auth) as client:  # the series exists once /predict answered
            assert client.post("/predict", json=EXAMPLE_RECORD).status_code == 200
        wait_for(
            lambda: scraped() is not None, 60, "Prometheus to scrape the service", process, log
        )
        before = scraped()
        assert before is not None
        with server.client(headers=auth) as client:
            for _ in range(5):
                assert client.post("/predict", json=EXAMPLE_RECORD).status_code == 200
        wait_for(lambda: (scraped() or 0) >= before + 5, 30, "the scraped counter to go up")
    finally:
        stop_process_group(process)


# --- start without a model, then reload -----------------------------------------------------


@pytest.fixture(scope="module")
def empty_server(
    trained_model: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str]]:
    """A server told to serve a registered model that does not exist (yet)."""
    name = f"{trained_model.model_name}-serving-{uuid.uuid4().hex[:8]}"
    env = server_env(trained_model, model_name=name, alias="live", api_key=API_KEY)
    started = start_server(env, tmp_path_factory.mktemp("serving-empty"), "empty", wait="/health")
    yield started, name
    stop_process_group(started.process)
    from mlflow import MlflowClient

    client = MlflowClient(trained_model.tracking_uri, trained_model.tracking_uri)
    with contextlib.suppress(Exception):  # never created if the test failed early
        client.delete_registered_model(name)


def test_without_a_model_the_service_lives_but_is_not_ready(empty_server, auth):
    server, name = empty_server
    with server.client(headers=auth) as client:
        assert client.get("/health").status_code == 200
        # The first (background) load fails soon: then /ready names the model it looked for.
        deadline = time.monotonic() + 90
        while True:
            ready = client.get("/ready")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "model_unavailable"
            if name in ready.json()["error"]["message"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert name in ready.json()["error"]["message"]
        predicted = client.post("/predict", json=EXAMPLE_RECORD)
        assert predicted.status_code == 503
        assert predicted.json()["error"]["code"] == "model_unavailable"
        failed = client.post("/admin/reload")
        assert failed.status_code == 503 and failed.json()["error"]["code"] == "reload_failed"
        metrics = client.get("/metrics").text
    assert metric_value(metrics, "fmops_model_ready") == 0
    assert metric_value(metrics, "fmops_model_reloads_total", result="failed") >= 1


def test_a_model_loaded_by_hand_ends_the_background_retries(
    trained_model: Any, tmp_path_factory: pytest.TempPathFactory, auth
):
    """With no periodic reload the alias is followed only when told: once POST /admin/reload
    put a model in service, the start's back-off (retrying every second here) stops, and a
    later alias move waits for the next reload (it once swapped the model unasked)."""
    from mlflow import MlflowClient

    name = f"{trained_model.model_name}-retries-{uuid.uuid4().hex[:8]}"
    env = server_env(trained_model, model_name=name, alias="live", api_key=API_KEY,
                     load_retry_max_s="1")  # fmt: skip
    server = start_server(
        env, tmp_path_factory.mktemp("serving-retries"), "retries", wait="/health"
    )
    registry = MlflowClient(trained_model.tracking_uri, trained_model.tracking_uri)
    try:
        source = f"models:/{trained_model.model_name}/{trained_model.version}"
        first = str(registry.copy_model_version(source, name).version)
        second = str(registry.copy_model_version(source, name).version)
        with server.client(headers=auth) as client:
            deadline = time.monotonic() + 60
            while name not in client.get("/ready").json().get("error", {}).get("message", ""):
                assert time.monotonic() < deadline, "the start's first load never failed"
                time.sleep(0.2)  # the back-off is running: its first try found no model
            registry.set_registered_model_alias(name, "live", first)
            assert client.post("/admin/reload").status_code == 200
            registry.set_registered_model_alias(name, "live", second)
            time.sleep(2.5)  # more than two of the back-off's 1 s waits
            assert client.get("/ready").json()["model"]["version"] == first
            assert client.post("/admin/reload").json()["model"]["version"] == second
    finally:
        stop_process_group(server.process)
        with contextlib.suppress(Exception):
            registry.delete_registered_model(name)


def test_reload_picks_up_the_alias_and_swaps_without_dropping_requests(
    empty_server, trained_model, auth
):
    from mlflow import MlflowClient

    server, name = empty_server
    registry = MlflowClient(trained_model.tracking_uri, trained_model.tracking_uri)
    source = f"models:/{trained_model.model_name}/{trained_model.version}"
    first = str(registry.copy_model_version(source, name).version)
    registry.set_registered_model_alias(name, "live", first)
    with server.client(headers=auth) as client:
        loaded = client.post("/admin/reload")
        assert loaded.status_code == 200, loaded.text
        if loaded.json()["changed"]:  # else the background load (retrying) got there first
            assert loaded.json()["previous"] is None
        assert client.get("/ready").json()["model"]["version"] == first
        again = client.post("/admin/reload").json()
        assert again["changed"] is False

        second = str(registry.copy_model_version(source, name).version)
        registry.set_registered_model_alias(name, "live", second)

        def predict(_: int) -> tuple[int, str | None]:
            response = client.post("/predict", json=EXAMPLE_RECORD)
            return response.status_code, response.json().get("model", {}).get("version")

        with ThreadPoolExecutor(4) as pool:
            during = pool.map(predict, range(40))
            swapped = client.post("/admin/reload")
            results = list(during)
        assert swapped.status_code == 200, swapped.text
        assert swapped.json()["model"]["version"] == second
        assert swapped.json()["previous"]["version"] == first
        assert {status for status, _ in results} == {200}
        assert {version for _, version in results} <= {first, second}
        after = client.post("/predict", json=EXAMPLE_RECORD).json()
        assert after["model"] == {
            "name": name,
            "version": second,
            "alias": "live",
            "run_id": trained_model.run_id,
        }
