"""`python -m financemath_mlops.serving` as a real process: no key beyond loopback, no start;
keys out of every log line (issue 28, item 3).

No trained model is needed: the model URI is unsupported, so the service starts, answers
/health and reports the missing model, which is all these checks need. Every process is started
in its own group and stopped by its pid (tests/helpers.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import cli_env, free_port, running, tail, wait_for

pytestmark = pytest.mark.integration

SERVE = [sys.executable, "-m", "financemath_mlops.serving", "--model-uri", "nowhere:/model"]
SECRET = "s3cr3t-in-the-query"
NOT_SET_WARNING = "no API key set"


def service_env(workdir: Path, **extra: str) -> dict[str, str]:
    """A service that writes only under `workdir` and needs no tracking store."""
    return cli_env(
        FMOPS_MLFLOW__TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}",
        FMOPS_PATHS__REPORTS_DIR=str(workdir / "reports"),
        FMOPS_MONITORING__PREDICTION_LOG="false",
        PROMETHEUS_MULTIPROC_DIR=str(workdir),  # used with --workers 2 only
        MLFLOW_DISABLE_TELEMETRY="true",
        **extra,
    )


def refused(workdir: Path, env: dict[str, str], *args: str) -> str:
    """Run the entry point, which must stop by itself with exit 2 before anything binds (a
    service that starts instead is stopped by its pid); return what it printed."""
    log = workdir / "refused.log"
    with running([*SERVE, "--port", str(free_port()), *args], env, workdir, log) as process:
        try:
            process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail(f"it started instead of refusing{tail(log)}")
    output = log.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 2, f"exit {process.returncode}:\n{output[-3000:]}"
    assert "Uvicorn running" not in output and "Started server process" not in output
    assert "Traceback" not in output
    return output


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_no_key_beyond_loopback_exits_2_before_binding(tmp_path, host):
    output = refused(tmp_path, service_env(tmp_path), "--host", host)
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert host in line
    assert "FMOPS_SERVING__API_KEY" in line
    assert "FMOPS_SERVING__ALLOW_ANONYMOUS" in line and "serving.allow_anonymous" in line


@pytest.mark.parametrize("key", [f"{SECRET}\n", f" {SECRET}", f"{SECRET}\t"])
def test_a_key_with_surrounding_whitespace_is_refused_at_start(tmp_path, key):
    env = service_env(tmp_path, FMOPS_SERVING__API_KEY=key)
    output = refused(tmp_path, env, "--host", "127.0.0.1")
    assert "FMOPS_SERVING__API_KEY" in output and "whitespace" in output
    assert SECRET not in output  # the key itself is never printed


def serve_until_health(workdir: Path, env: dict[str, str], *args: str) -> str:
    """Start the entry point, wait for /health (through 127.0.0.1), send a key in the query
    string, stop it by its pid; return everything it printed."""
    port = free_port()
    log = workdir / "service.log"
    base = f"http://127.0.0.1:{port}"
    with running([*SERVE, "--port", str(port), *args], env, workdir, log) as process:
        wait_for(lambda: httpx.get(f"{base}/health", timeout=5).status_code == 200,
                 120, "/health", process, log)  # fmt: skip
        for _ in range(4):  # with two workers, each is likely to log one of these
            httpx.post(f"{base}/predict?api_key={SECRET}", json={}, timeout=10)
            httpx.get(f"{base}/health?token={SECRET}&x=1", timeout=10)
        wait_for(lambda: log.read_text().count("?[redacted]") >= 8, 30, "the access log",
                 process, log)  # fmt: skip
    return log.read_text(encoding="utf-8", errors="replace")


def test_allow_anonymous_lets_it_start_beyond_loopback_and_says_so(tmp_path):
    env = service_env(tmp_path, FMOPS_SERVING__ALLOW_ANONYMOUS="true")
    output = serve_until_health(tmp_path, env, "--host", "0.0.0.0")
    infos = [line for line in output.splitlines() if "anonymous access was asked for" in line]
    assert len(infos) == 1 and " INFO " in infos[0], tail(tmp_path / "service.log")
    assert NOT_SET_WARNING not in output


@pytest.mark.parametrize("workers", [1, 2])
def test_on_loopback_it_says_once_at_info_and_redacts_query_strings(tmp_path, workers):
    """No key on loopback: one INFO line from the entry point and no WARNING from the app (in
    the same process, or in each of two worker processes); the access log shows every request
    with its query string replaced, the secret nowhere."""
    output = serve_until_health(
        tmp_path, service_env(tmp_path), "--host", "127.0.0.1", "--workers", str(workers)
    )
    infos = [line for line in output.splitlines() if "without an API key" in line]
    assert len(infos) == 1 and " INFO " in infos[0], output[-3000:]
    assert "FMOPS_SERVING__API_KEY" in infos[0]
    assert NOT_SET_WARNING not in output
    assert '"POST /predict?[redacted] HTTP/1.1"' in output
    assert '"GET /health?[redacted] HTTP/1.1" 200' in output
    assert SECRET not in output and "x=1" not in output
    if workers == 2:
        assert output.count("Application startup complete") == 2  # both workers served


def test_plain_uvicorn_warns_that_no_key_is_set_and_redacts_too(tmp_path):
    """`uvicorn ...app:app` cannot know its address: the app warns, once."""
    port = free_port()
    log = tmp_path / "uvicorn.log"
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "financemath_mlops.serving.app:app",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    env = service_env(tmp_path, FMOPS_SERVING__MODEL_URI="nowhere:/model")
    with running(command, env, tmp_path, log) as process:
        wait_for(lambda: httpx.get(f"{base}/health", timeout=5).status_code == 200,
                 120, "/health", process, log)  # fmt: skip
        httpx.get(f"{base}/health?api_key={SECRET}", timeout=10)
        wait_for(lambda: "?[redacted]" in log.read_text(), 30, "the access log", process, log)
    output = log.read_text(encoding="utf-8", errors="replace")
    warnings = [line for line in output.splitlines() if NOT_SET_WARNING in line]
    assert len(warnings) == 1 and " WARNING " in warnings[0], output[-3000:]
    assert "FMOPS_SERVING__ALLOW_ANONYMOUS" in warnings[0]
    assert SECRET not in output
