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


RETRY_PROBE = (
    "from financemath_mlops import runs\n"
    "from financemath_mlops.config import load_settings\n"
    "runs.configure(load_settings().mlflow)\n"
    "try:\n"
    "    runs.client().search_experiments()\n"
    "except Exception as exc:\n"
    "    print(type(exc).__name__, exc)\n"
)


@pytest.fixture(scope="module")
def waits(
    refused_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[subprocess.CompletedProcess[str], float, str]]:
    """The two runs that wait seconds by design, started together so the module pays one wait:
    training against a server whose listen queue accepts connections nobody answers (the probe's
    budget), and an MLflow call after the probe on a store that died (MLflow's bounded retries,
    4 attempts and 2 + 4 s of back-off instead of its default 7 retries and about 250 s)."""
    cwd = tmp_path_factory.mktemp("waits")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent_uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        commands = {
            "silent": ([sys.executable, "-m", "financemath_mlops.training"], silent_uri),
            "retries": ([sys.executable, "-c", RETRY_PROBE], refused_uri),
        }
        started = time.perf_counter()
        running = {
            name: subprocess.Popen(
                command,
                env=cli_env(FMOPS_MLFLOW__TRACKING_URI=uri),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for name, (command, uri) in commands.items()
        }
        results = {}
        for name, process in running.items():
            out, err = process.communicate(timeout=120)
            done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
            results[name] = (done, time.perf_counter() - started, commands[name][1])
    return results


def test_a_server_that_never_answers_stops_training_within_seconds(waits) -> None:
    done, seconds, silent_uri = waits["silent"]
    assert done.returncode == 2, done.stderr[-2000:]
    assert seconds < BOUND_S
    assert f"cannot reach the MLflow tracking server {silent_uri}: no answer" in done.stderr


def test_mlflow_calls_after_the_probe_give_up_within_the_documented_bound(waits) -> None:
    """A store that dies mid-run: MLflow's own retries are bounded for the stages."""
    done, seconds, _ = waits["retries"]
    assert "MlflowException" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "Max retries exceeded" in done.stdout
    assert seconds < BOUND_S
