"""MLflow's HTTP client repeats reads, never a write that may have been carried out.

A real MLflow client talks to a loopback server that answers 503 to everything and counts what
it receives. MLflow alone retries every method (its urllib3 Retry has allowed_methods=None):
a lost answer to ``runs/create`` or ``model-versions/create`` would make a second run or version.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator

import pytest

from financemath_mlops.runs.http_retries import is_idempotent
from tests.helpers import cli_env

RETRIES = 2

CLIENT = """
from financemath_mlops import runs
from financemath_mlops.config import load_settings

runs.configure(load_settings().mlflow)
client = runs.client()
for call in (
    lambda: client.search_experiments(),
    lambda: client.create_experiment("x"),
    lambda: client.get_experiment_by_name("x"),
    lambda: client.create_run("0"),
):
    try:
        call()
    except Exception as exc:
        print(type(exc).__name__)
"""


@pytest.fixture()
def unavailable_server() -> Iterator[tuple[str, Counter[str]]]:
    """Answers 503 to every request; counts them by method and path."""
    received: Counter[str] = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            received[f"{self.command} {self.path.split('?')[0]}"] += 1
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = answer

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_reads_are_retried_and_creations_are_sent_once(
    unavailable_server: tuple[str, Counter[str]],
) -> None:
    uri, received = unavailable_server
    env = cli_env(
        FMOPS_MLFLOW__TRACKING_URI=uri,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES=str(RETRIES),  # the user's values win over ours
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="0",
        MLFLOW_HTTP_REQUEST_BACKOFF_JITTER="0",
    )
    done = subprocess.run([sys.executable, "-c", CLIENT], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.stdout.split() == ["MlflowException"] * 4, done.stdout + done.stderr[-2000:]
    api = "/api/2.0/mlflow"
    assert received[f"POST {api}/experiments/search"] == 1 + RETRIES  # a read sent as POST
    assert received[f"GET {api}/experiments/get-by-name"] == 1 + RETRIES
    assert received[f"POST {api}/experiments/create"] == 1
    assert received[f"POST {api}/runs/create"] == 1


@pytest.mark.parametrize(
    ("method", "path", "again"),
    [
        ("GET", "/api/2.0/mlflow/runs/get", True),
        ("POST", "/api/2.0/mlflow/runs/search", True),
        ("POST", "/api/2.0/mlflow/registered-models/alias", True),
        ("POST", "/api/2.0/mlflow/runs/set-tag", True),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x/model.txt", True),
        ("POST", "/api/2.0/mlflow/runs/log-batch", False),  # metrics would be appended twice
        ("POST", "/api/2.0/mlflow/model-versions/create", False),
        ("POST", "/api/2.0/mlflow/logged-models", False),
    ],
)
def test_which_requests_are_sent_again(method: str, path: str, again: bool) -> None:
    assert is_idempotent(method, path) is again
