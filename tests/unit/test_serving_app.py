"""The service without a model, in process: probes, error shapes, body guard, auth, OpenAPI.

The configured model URI is unsupported, so start-up fails fast without touching MLflow: what
remains is everything the service must get right before (and regardless of) a model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from financemath_mlops.config import ConfigError, load_settings
from financemath_mlops.serving.app import ServiceSettings, create_app
from financemath_mlops.serving.schemas import EXAMPLE_RECORD

JSON = {"Content-Type": "application/json"}
KEY = "unit-test-key"


def make_client(tmp: Path, **serving: object) -> TestClient:
    settings = load_settings(
        overrides={
            "mlflow": {"tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}"},
            "serving": {"model_uri": "nowhere:/model", "max_body_bytes": 4096, **serving},
        }
    )
    return TestClient(create_app(ServiceSettings.of(settings)), raise_server_exceptions=False)


def first_load_failed(test_client: TestClient) -> TestClient:
    """Wait (bounded) for the background model load to give up once, as it must here."""
    deadline = time.monotonic() + 60
    while 'fmops_model_reloads_total{result="failed"}' not in test_client.get("/metrics").text:
        assert time.monotonic() < deadline, "the first model load did not finish in 60 s"
        time.sleep(0.05)
    return test_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("serving")) as test_client:
        yield first_load_failed(test_client)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with make_client(tmp_path_factory.mktemp("serving-key"), api_key=KEY) as test_client:
        yield first_load_failed(test_client)


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert "Traceback" not in response.text
    return body["error"]


def test_liveness_answers_without_a_model(client):
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize("path", ["/ready", "/model"])
def test_readiness_and_model_say_503_with_the_reason(client, path):
    response = client.get(path)
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "model_unavailable"
    assert "nowhere:/model" in error["message"]


def test_predict_says_503_without_a_model(client):
    response = client.post("/predict", json=EXAMPLE_RECORD)
    assert response.status_code == 503
    assert error_of(response)["code"] == "model_unavailable"


def test_ready_lists_the_dependencies_even_without_a_model(client):
    details = error_of(client.get("/ready"))["details"]
    log = details["dependencies"]["prediction_log"]
    assert log["up"] is True and log["address"] == "paths.predictions_dir"
    assert "tracking_store" not in details["dependencies"]  # nowhere:/ is no registry URI
    text = client.get("/metrics").text
    assert 'fmops_dependency_up{name="prediction_log"} 1.0' in text
    assert "fmops_prediction_log_durable 1.0" in text
    free = [line for line in text.splitlines() if line.startswith("fmops_prediction_log_disk_f")]
    assert len(free) == 1 and float(free[0].split()[-1]) > 0


def test_the_adaptive_pool_has_a_spare_worker_and_a_fixed_one_none(client, tmp_path):
    """Adaptive (the default): a worker per core and one more; inference_threads=1 fixed: a
    worker per core (each call one thread), no oversubscription asked for."""
    from financemath_mlops.serving.app import available_cores

    assert client.app.state.service.pool.workers == available_cores() + 1
    with make_client(tmp_path, inference_threads=1) as fixed:
        assert fixed.app.state.service.pool.workers == available_cores()


def test_metrics_report_not_ready(client):
    text = client.get("/metrics").text
    assert "fmops_model_ready 0.0" in text
    assert 'fmops_model_reloads_total{result="failed"} 1.0' in text


def test_admin_reload_is_absent_without_an_api_key(client):
    response = client.post("/admin/reload")
    assert response.status_code == 404
    assert "/admin/reload" not in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"\xc3\x28", JSON, 400, "invalid_encoding"),
        (b'{"question": ', JSON, 400, "invalid_json"),
        (b'{"question": "a", "tables": [', JSON, 400, "invalid_json"),  # past the guard: parser
        (b'{"a": 1}}', JSON, 400, "invalid_json"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, JSON, 400, "too_deep"),
        (b'{"question": "q"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"x" * 5000, JSON, 413, "payload_too_large"),
        (b'{"question": "\\ud800"}', JSON, 422, "validation_error"),
        (b'{"question": "   "}', JSON, 422, "validation_error"),
    ],
)
def test_bad_bodies_are_4xx_in_the_one_error_shape(client, content, headers, status, code):
    response = client.post("/predict", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code


def test_brackets_inside_strings_do_not_count_as_nesting(client):
    question = "[" * 100 + "{" * 100
    response = client.post("/predict", json={"question": question})
    assert response.status_code == 503  # got past the guard and validation


def test_streamed_bytes_are_counted_without_content_length(client):
    def chunks():
        for _ in range(10):
            yield b" " * 1000

    response = client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_a_wrong_content_length_is_a_400(client):
    response = client.post("/predict", content=b"{}", headers={**JSON, "Content-Length": "abc"})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nowhere", 404, "not_found"), ("PUT", "/predict", 405, "method_not_allowed")],
)
def test_unknown_routes_and_methods_use_the_error_shape(client, method, path, status, code):
    response = client.request(method, path)
    assert response.status_code == status
    assert error_of(response)["code"] == code


def test_validation_details_name_fields_without_echoing_input(client):
    response = client.post("/predict", json={"question": "hidden-value", "tables": [1], "x": 2})
    assert response.status_code == 422
    error = error_of(response)
    assert {tuple(d["loc"]) for d in error["details"]} >= {("body", "tables", 0), ("body", "x")}
    assert "hidden-value" not in response.text


def test_our_request_id_is_kept_and_the_clients_stored_beside_it(client):
    first = client.get("/health", headers={"X-Request-ID": "abc-123"}).headers
    second = client.get("/health", headers={"X-Request-ID": "abc-123"}).headers
    assert len(first["x-request-id"]) == 32 and first["x-request-id"] != second["x-request-id"]
    assert first["x-client-request-id"] == "abc-123"
    insane = client.get("/health", headers={"X-Request-ID": "x" * 500}).headers
    assert len(insane["x-request-id"]) == 32 and "x-client-request-id" not in insane


def test_head_health_is_200(client):
    response = client.head("/health")
    assert response.status_code == 200 and response.content == b""


def test_a_trailing_slash_is_a_404_in_our_shape_not_a_redirect(client):
    response = client.post(
        "/predict/", json=EXAMPLE_RECORD, headers={"Host": "evil.example"}, follow_redirects=False
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert error_of(response)["code"] == "not_found"


def test_ready_does_not_show_file_system_paths(tmp_path):
    folder = tmp_path / "models" / "not-a-model"  # a folder without MLmodel
    folder.mkdir(parents=True)
    with make_client(tmp_path, model_uri=str(folder)) as local:
        deadline = time.monotonic() + 60
        while "loading" in (response := local.get("/ready")).text and time.monotonic() < deadline:
            time.sleep(0.1)  # the model loads in the background
    assert response.status_code == 503
    assert str(tmp_path) not in response.text and "not-a-model" not in response.text
    assert "see the service log" in error_of(response)["message"]


def test_an_empty_api_key_refuses_to_start(tmp_path):
    with pytest.raises(ConfigError, match="serving.api_key"):
        make_client(tmp_path, api_key="  ")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "nope"}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"X-API-Key": KEY}, 503),
        ({"Authorization": f"Bearer {KEY}"}, 503),
    ],
)
def test_the_api_key_is_checked_before_anything_else(keyed, headers, status):
    response = keyed.post("/predict", json=EXAMPLE_RECORD, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert error_of(response)["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("path", "body"), [("/predict", {"q": 1}), ("/predict/batch", {"items": 5})]
)
def test_a_caller_without_the_key_learns_nothing_about_the_body(keyed, path, body):
    """401 before validation: no 422 describing the schema to a caller without the key."""
    assert keyed.post(path, json=body).status_code == 401
    assert keyed.post(path, json=body, headers={"X-API-Key": KEY}).status_code == 422


def test_the_keyed_schema_names_both_ways_to_send_the_key(keyed):
    schema = keyed.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}
    for path in ("/predict", "/predict/batch", "/model"):
        operation = next(iter(schema["paths"][path].values()))
        assert operation["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}], path
        assert "401" in operation["responses"]


def test_probes_stay_open_with_an_api_key(keyed):
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ready").status_code == 503
    assert keyed.get("/metrics").status_code == 200


def test_admin_reload_exists_with_an_api_key_and_reports_failures(keyed):
    assert keyed.post("/admin/reload").status_code == 401
    response = keyed.post("/admin/reload", headers={"X-API-Key": KEY})
    assert response.status_code == 503
    error = error_of(response)
    assert error["code"] == "reload_failed"
    assert error["details"] == {"still_serving": None}


def test_openapi_carries_the_configured_limits_and_the_error_shape(client):
    schema = client.get("/openapi.json").json()
    record = schema["components"]["schemas"]["PredictRequest"]["properties"]
    assert record["question"]["maxLength"] == 8000
    assert record["tables"]["maxItems"] == 10
    assert record["tables"]["items"]["maxLength"] == 20000
    assert schema["components"]["schemas"]["BatchRequest"]["properties"]["items"]["maxItems"] == 64
    predict = schema["paths"]["/predict"]["post"]
    for status in ("400", "413", "415", "422", "503"):
        content = predict["responses"][status]["content"]["application/json"]["schema"]
        assert content["$ref"].endswith("/ErrorResponse")
    assert "401" not in predict["responses"]  # no key configured: no auth in the contract
    assert schema["components"]["schemas"]["PredictRequest"]["examples"]


def test_the_periodic_reload_keeps_trying_without_a_model(tmp_path):
    with make_client(tmp_path, reload_interval_s=0.05) as periodic:
        deadline = time.monotonic() + 10
        failed = 0.0
        while time.monotonic() < deadline and failed < 3:
            for line in periodic.get("/metrics").text.splitlines():
                if line.startswith('fmops_model_reloads_total{result="failed"}'):
                    failed = float(line.split()[-1])
            time.sleep(0.05)
        assert failed >= 3
        assert periodic.get("/ready").status_code == 503
