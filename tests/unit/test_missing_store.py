"""Readers (serving, `registry`) refuse a missing local MLflow store; the pipeline creates it.
Every stage refuses an http(s) tracking server it cannot reach, after one bounded probe."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from financemath_mlops import runs
from financemath_mlops.cli import run_main
from financemath_mlops.config import load_settings
from financemath_mlops.registry.__main__ import main as registry_main
from financemath_mlops.runs import store
from financemath_mlops.serving.app import ServiceSettings, create_app


def settings_for(store: Path, **serving: object):
    return load_settings(
        overrides={"mlflow": {"tracking_uri": f"sqlite:///{store}"}, "serving": serving}
    )


def test_registry_refuses_a_missing_store_and_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "mlruns" / "mlflow.db"
    code = run_main(registry_main, ["--tracking-uri", f"sqlite:///{store}", "list"])
    assert code == 2
    assert "make run" in capsys.readouterr().err
    assert not store.exists()


def test_serving_refuses_to_start_on_a_missing_store(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    settings = settings_for(store, model_uri="models:/financemath-regressor@champion")
    app = create_app(ServiceSettings.of(settings))
    with pytest.raises(runs.TrackingError, match="make run"), TestClient(app):
        pass
    assert not store.exists()


def test_a_local_model_folder_needs_no_store(tmp_path: Path) -> None:
    runs.require_store(settings_for(tmp_path / "none.db").mlflow, str(tmp_path / "model"))


def test_the_pipeline_still_creates_a_missing_store(tmp_path: Path) -> None:
    store = tmp_path / "fresh" / "mlflow.db"
    runs.configure(settings_for(store).mlflow)
    runs.client().search_registered_models()
    assert store.is_file()


# --- an http(s) tracking server that cannot be reached: the start-of-stage probe --------------


@contextlib.contextmanager
def http_server(status: int | None) -> Iterator[str]:
    """A server on loopback answering every GET with ``status`` (None: accepts, never answers)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if status is None:
                time.sleep(5)
                return
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def mlflow_http_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The probe sets MLflow's HTTP bounds in os.environ: start without them, and undo."""
    for name in ("TIMEOUT", "MAX_RETRIES", "BACKOFF_FACTOR", "BACKOFF_JITTER"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    return monkeypatch


def http_store(uri: str):
    return load_settings(overrides={"mlflow": {"tracking_uri": uri}}).mlflow


def test_a_server_that_answers_passes_the_probe_and_bounds_mlflow_retries(
    mlflow_http_env: pytest.MonkeyPatch,
) -> None:
    with http_server(404) as uri:  # not MLflow's /health, but a server is there
        runs.check_reachable(http_store(uri))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == str(store.STAGE_HTTP_RETRIES)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == str(store.STAGE_HTTP_TIMEOUT_S)


def test_a_server_error_answer_fails_the_probe(mlflow_http_env: pytest.MonkeyPatch) -> None:
    with http_server(503) as uri, pytest.raises(runs.TrackingError, match=f"{uri}.*503"):
        runs.check_reachable(http_store(uri))


def test_a_silent_server_fails_the_probe_within_its_budget(
    mlflow_http_env: pytest.MonkeyPatch,
) -> None:
    mlflow_http_env.setattr(store, "PROBE_SECONDS", 1.0)
    started = time.perf_counter()
    with http_server(None) as uri, pytest.raises(runs.TrackingError, match="no answer"):
        runs.check_reachable(http_store(uri))
    assert time.perf_counter() - started < 3


def test_the_users_mlflow_http_settings_win(mlflow_http_env: pytest.MonkeyPatch) -> None:
    mlflow_http_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    with http_server(200) as uri:
        runs.check_reachable(http_store(uri))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"


def test_a_local_store_is_not_probed(tmp_path: Path, mlflow_http_env: pytest.MonkeyPatch) -> None:
    runs.check_reachable(settings_for(tmp_path / "none.db").mlflow)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_a_password_in_the_uri_is_not_shown(mlflow_http_env: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://ops:s3cret-pw@127.0.0.1:{port}"
    with pytest.raises(runs.TrackingError, match="connection refused") as refused:
        runs.check_reachable(http_store(uri))
    assert "s3cret-pw" not in str(refused.value)
    assert f"http://ops:***@127.0.0.1:{port}" in str(refused.value)


def test_the_probe_honours_mlflows_tls_settings(
    tmp_path: Path, mlflow_http_env: pytest.MonkeyPatch
) -> None:
    # A store behind a private CA: MLflow reaches it with MLFLOW_TRACKING_SERVER_CERT_PATH (or
    # INSECURE_TLS), so the probe must too, and must still refuse it without them.
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    import subprocess

    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key),
         "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    uri = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        mlflow_http_env.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH", raising=False)
        mlflow_http_env.delenv("MLFLOW_TRACKING_INSECURE_TLS", raising=False)
        with pytest.raises(runs.TrackingError, match="SSLError"):
            runs.check_reachable(http_store(uri))
        mlflow_http_env.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(cert))
        runs.check_reachable(http_store(uri))
        mlflow_http_env.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
        mlflow_http_env.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
        runs.check_reachable(http_store(uri))
    finally:
        server.shutdown()
        server.server_close()
