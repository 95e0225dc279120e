"""The newcomer's path: the service answers at once whatever MLflow does, a model folder exported
by `make run` serves with its registered name and version and no registry, and a fresh clone's
missing folders are created (Prefect's home) before anything needs them."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from financemath_mlops.errors import StageError
from tests.helpers import (
    REPO_ROOT,
    cli_env,
    free_port,
    metric_value,
    running,
    server_env,
    wait_for,
)


@contextlib.contextmanager
def service(env: dict[str, str], workdir: Path, *args: str) -> Iterator[tuple[Any, str, Path]]:
    """`python -m financemath_mlops.serving` (the README's serve command) on a free port:
    (process, base URL, log), stopped on exit."""
    port = free_port()
    log_path = workdir / "service.log"
    command = [sys.executable, "-m", "financemath_mlops.serving", "--port", str(port), *args]
    with running(command, env, workdir, log_path) as process:
        yield process, f"http://127.0.0.1:{port}", log_path


def poll(url: str, until: Any, timeout: float, process: Any, log_path: Path) -> httpx.Response:
    """The first answer of `url` that `until` accepts (the service must stay up meanwhile)."""

    def accepted() -> httpx.Response | None:
        response = httpx.get(url, timeout=5)
        return response if until(response) else None

    return wait_for(accepted, timeout, f"GET {url}", process, log_path, interval=0.1)


@pytest.fixture()
def silent_tracking_server():
    """A port that accepts TCP connections and never answers: MLflow's worst case (a hang)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_health_answers_while_the_tracking_server_hangs(tmp_path, silent_tracking_server):
    env = server_env_without_model(tmp_path, silent_tracking_server)
    with service(env, tmp_path) as (process, base, log_path):
        poll(f"{base}/health", lambda r: r.status_code == 200, 90, process, log_path)
        # The load is in progress (or failed) in the background; /health is not held up by it.
        started = time.perf_counter()
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        assert time.perf_counter() - started < 1.0
        loading = httpx.get(f"{base}/ready", timeout=5)
        assert loading.status_code == 503
        assert loading.json()["error"]["code"] == "model_unavailable"
        # Bounded MLflow timeouts: the hang becomes a reason on /ready, and the service retries.
        host = silent_tracking_server.removeprefix("http://")
        failed = poll(
            f"{base}/ready",
            lambda r: r.status_code == 503 and host in r.json()["error"]["message"],
            90,
            process,
            log_path,
        )
        assert "no model is loaded" in failed.json()["error"]["message"]
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200


def server_env_without_model(workdir: Path, tracking_uri: str) -> dict[str, str]:
    return cli_env(
        FMOPS_MLFLOW__TRACKING_URI=tracking_uri,
        FMOPS_SERVING__MODEL_NAME="financemath-regressor",
        FMOPS_SERVING__MLFLOW_TIMEOUT_S="2",
        FMOPS_SERVING__MLFLOW_RETRIES="0",
        FMOPS_PATHS__PREDICTIONS_DIR=str(workdir / "predictions"),
        FMOPS_PATHS__REPORTS_DIR=str(workdir / "reports"),
        MLFLOW_DISABLE_TELEMETRY="true",
    )


def test_an_exported_model_folder_serves_without_the_registry(trained_model, tmp_path):
    from financemath_mlops import runs

    runs.configure(trained_model.settings.mlflow)
    folder = tmp_path / "models" / "serving"
    uri = f"models:/{trained_model.model_name}/{trained_model.version}"
    ref = runs.export_model(uri, folder)
    assert (ref.name, ref.version) == (trained_model.model_name, trained_model.version)
    assert (folder / "MLmodel").is_file()
    # Readable by others: a container runs as uid 10001 on a folder made by the host's user.
    assert folder.stat().st_mode & 0o005 == 0o005
    assert all(p.stat().st_mode & 0o004 for p in folder.rglob("*"))
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "staging left"
    runs.export_model(uri, folder)  # its own earlier export: replaced whole
    # A file added to an earlier export is the user's: refused, not deleted.
    (folder / "stale.txt").write_text("mine")
    with pytest.raises(runs.TrackingError, match="stale.txt"):
        runs.export_model(uri, folder)
    assert (folder / "stale.txt").read_text() == "mine"
    (folder / "stale.txt").unlink()

    # Served from the folder with a tracking server that cannot answer: no registry needed, and
    # the registered name and version still show on /ready and fmops_model_info.
    env = server_env(trained_model, alias="champion")
    env["FMOPS_MLFLOW__TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"
    env["FMOPS_PATHS__PREDICTIONS_DIR"] = str(tmp_path / "predictions")
    with service(env, tmp_path, "--model-uri", str(folder)) as (process, base, log_path):
        ready = poll(f"{base}/ready", lambda r: r.status_code == 200, 120, process, log_path)
        assert ready.json()["model"]["name"] == trained_model.model_name
        assert ready.json()["model"]["version"] == trained_model.version
        body = {"question": "What is 5% of $1,000?", "tables": [], "topic": "Accounting"}
        assert httpx.post(f"{base}/predict", json=body, timeout=30).status_code == 200
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
    info = {"name": trained_model.model_name, "version": trained_model.version}
    assert metric_value(metrics, "fmops_model_info", alias="champion", **info) == 1


def test_prefect_home_and_its_parents_are_created(tmp_path, monkeypatch):
    from financemath_mlops.flows.environment import prepare_prefect_env

    for name in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "fresh-clone" / ".cache"  # neither folder exists, as on a fresh clone
    prepare_prefect_env(cache)
    assert Path(os.environ["PREFECT_HOME"]) == (cache / "prefect").resolve()
    assert (cache / "prefect" / "prefect.db").is_file()


def test_a_prefect_home_that_is_a_file_is_one_clear_error(tmp_path, monkeypatch):
    from financemath_mlops.flows.environment import prepare_prefect_env

    for name in ("PREFECT_API_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(name, raising=False)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where Prefect's home should be")
    monkeypatch.setenv("PREFECT_HOME", str(blocker))
    with pytest.raises(StageError, match="Prefect cannot keep its database"):
        prepare_prefect_env(tmp_path / ".cache")


def front_door_benchmark() -> Any:
    """benchmarks/front_door.py as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "front_door_benchmark", REPO_ROOT / "benchmarks" / "front_door.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_front_door_benchmark_starts_a_newcomer_with_every_cache_empty(tmp_path: Path) -> None:
    bench = front_door_benchmark()
    mine = {
        "PATH": "/usr/bin",
        "XDG_CACHE_HOME": "/root/.cache",  # where a used export cache would be found
        "FMOPS_PATHS__ONNX_CACHE_DIR": "/somewhere/warm",
        "PREFECT_API_URL": "http://127.0.0.1:4200/api",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "VIRTUAL_ENV": "/work/main/.venv",
        "PIP_FIND_LINKS": "/wheels",  # where packages come from: kept
    }
    env, caches = bench.newcomer_env("uv", tmp_path, mine)
    for variable, name in (
        ("XDG_CACHE_HOME", "xdg-cache"),
        ("UV_CACHE_DIR", "uv-cache"),
        ("PIP_CACHE_DIR", "pip-cache"),
    ):
        assert Path(env[variable]) == caches[name] and caches[name].parent == tmp_path
        assert list(caches[name].iterdir()) == []
    for gone in ("FMOPS_PATHS__ONNX_CACHE_DIR", "PREFECT_API_URL", "MLFLOW_TRACKING_URI"):
        assert gone not in env
    assert "VIRTUAL_ENV" not in env and env["INSTALLER"] == "uv"
    assert env["PIP_FIND_LINKS"] == "/wheels" and env["PATH"] == "/usr/bin"


def test_the_front_door_benchmark_judges_uv_against_the_pip_baseline() -> None:
    bench = front_door_benchmark()

    def run(total: float, pipeline: float) -> dict:
        phases = {phase: {"seconds": 1.0, "mb_received": 0.0} for phase in bench.PHASES}
        phases["make run (pipeline)"]["seconds"] = pipeline
        return {"phases": phases, "total_seconds": total}

    summary = bench.summarize(
        {"uv": [run(70.0, 40.0), run(80.0, 50.0)], "pip": [run(120.0, 35.0), run(140.0, 36.0)]}
    )
    assert summary["uv"]["total_seconds"] == 75.0  # the median of two runs
    assert summary["uv"]["phases"]["make run (pipeline)"]["seconds"] == 45.0
    targets = bench.targets(summary)
    assert targets["uv_total_at_most_75s"] == {"value": 75.0, "met": True}
    assert targets["uv_total_at_most_60s_goal"]["met"] is False
    assert targets["uv_total_over_pip"] == {"value": 0.58, "met": True}
