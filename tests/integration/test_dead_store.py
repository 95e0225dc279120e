"""A tracking server that cannot be reached stops every stage that needs it within seconds.

Before the start-of-stage probe, `training` ran CV and the final fit and then waited about 250 s
in MLflow's retry back-off; evaluation and promotion waited the same 250 s before their error.
Each stage runs here as a user runs it (a subprocess), timed from start to exit.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli_env

pytestmark = pytest.mark.integration

BOUND_S = 15  # the promise, Python's start-up included
UNRESOLVABLE = "http://nonexistent.invalid:5000"  # .invalid never resolves (RFC 6761)


@pytest.fixture(scope="module")
def refused_uri() -> str:
    """A port that was just free on loopback: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


STAGES = {
    "training": ["training"],
    "evaluation": ["evaluation"],
    "promotion": ["promotion"],
    "registry": ["registry", "list"],
    "predict": ["predict", "--input", "in.json", "--output", "out.parquet"],
    "monitoring": ["monitoring", "performance"],
    "flow": ["flows", "--source", "sample", "--rows", "50"],
}


def run_stage(
    args: list[str], uri: str, cwd: Path
) -> tuple[subprocess.CompletedProcess[str], float]:
    env = cli_env(FMOPS_MLFLOW__TRACKING_URI=uri, PREFECT_HOME=str(cwd / "prefect"))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", f"financemath_mlops.{args[0]}", *args[1:]],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done, time.perf_counter() - started


@pytest.mark.parametrize("stage", STAGES)
def test_a_refused_connection_stops_the_stage_within_seconds_naming_the_uri(
    stage: str, refused_uri: str, tmp_path: Path
) -> None:
    done, seconds = run_stage(STAGES[stage], refused_uri, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert seconds < BOUND_S
    assert f"cannot reach the MLflow tracking server {refused_uri}" in done.stderr
    assert "connection refused" in done.stderr and "FMOPS_MLFLOW__TRACKING_URI" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("stage", ["training", "evaluation", "promotion"])
def test_an_unresolvable_name_stops_the_stage_within_seconds_naming_it(
    stage: str, tmp_path: Path
) -> None:
    done, seconds = run_stage(STAGES[stage], UNRESOLVABLE, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert seconds < BOUND_S
    assert f"cannot reach the MLflow tracking server {UNRESOLVABLE}" in done.stderr
    assert "nonexistent.invalid does not resolve" in done.stderr


@pytest.fixture()
def silent_uri() -> Iterator[str]:
    """A server whose listen queue accepts connections that nobody ever answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_a_server_that_never_answers_stops_training_within_seconds(
    silent_uri: str, tmp_path: Path
) -> None:
    done, seconds = run_stage(STAGES["training"], silent_uri, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert seconds < BOUND_S
    assert f"cannot reach the MLflow tracking server {silent_uri}: no answer" in done.stderr


def test_mlflow_calls_after_the_probe_give_up_within_the_documented_bound(
    refused_uri: str, tmp_path: Path
) -> None:
    """A store that dies mid-run: MLflow's own retries are bounded for the stages (4 attempts,
    2 + 4 s of back-off) instead of its default 7 retries and about 250 s."""
    code = (
        "from financemath_mlops import runs\n"
        "from financemath_mlops.config import load_settings\n"
        "runs.configure(load_settings())\n"
        "try:\n"
        "    runs.client().search_experiments()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = cli_env(FMOPS_MLFLOW__TRACKING_URI=refused_uri)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    seconds = time.perf_counter() - started
    assert "MlflowException" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "Max retries exceeded" in done.stdout
    assert seconds < BOUND_S
