"""Plain helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "financemath"
VENV_BIN = Path(sys.executable).parent


def make_rows(n: int = 5, topic: str = "Accounting") -> list[dict[str, Any]]:
    """Small hand-made FinanceMath-shaped rows (for tests that need a handful of valid rows)."""
    rows = []
    for i in range(n):
        rows.append(
            {
                "question_id": f"t-{i}",
                "question": f"A bond pays a coupon of {5 + i}% on $1,000. What is the coupon?",
                "tables": (
                    [f"| item | value |\n|---|---:|\n| coupon | {5 + i}% |\n| face | $ 1,000 |"]
                    if i % 2 == 0
                    else []
                ),
                "python_solution": "def solution():\n    return 50",
                "ground_truth": float(50 + 10 * i),
                "topic": topic,
            }
        )
    return rows


_STORE_TEMPLATE: list[Path] = []  # the empty store of this process, made on first use


def seeded_store(db: Path) -> str:
    """`sqlite:///{db}`, where `db` (unless it exists already) is a copy of an empty MLflow
    store that MLflow created once in this test process: every table at the head revision and
    no experiment, so that MLflow adds its Default experiment on first open exactly as it does in
    a new file (same dump, sorted: checked when this was written). Creating the tables runs every
    migration, 3-7 s per store on 2 cores; the copy takes milliseconds. Tests that pin what a
    store holds after our code ran use it; none of them is about creating MLflow's tables."""
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_store_template(), db)
    return f"sqlite:///{db}"


def _store_template() -> Path:
    if not _STORE_TEMPLATE:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        folder = Path(tempfile.mkdtemp(prefix="fmops-test-store-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        db = folder / "template.db"
        store = SqlAlchemyStore(f"sqlite:///{db}", str(folder / "artifacts"))
        store.engine.dispose()
        with contextlib.closing(sqlite3.connect(db)) as connection, connection:
            connection.execute("DELETE FROM experiment_tags WHERE experiment_id = 0")
            connection.execute("DELETE FROM experiments WHERE experiment_id = 0")
        _STORE_TEMPLATE.append(db)
    return _STORE_TEMPLATE[0]


def write_json(path: Path, payload: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload), encoding="utf-8")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for running our CLIs in a subprocess: the test venv first on PATH, no leaks."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FMOPS_", "MLFLOW_")) and k != "HF_TOKEN"
    }
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_module(
    module: str, *args: str, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """`python -m financemath_mlops.<module> *args` in `cwd` with `cli_env(**env)`, output
    captured, bounded by `timeout`; the exit code is left to the caller (tests pin refusals)."""
    return subprocess.run(
        [sys.executable, "-m", f"financemath_mlops.{module}", *args],
        cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def run_ok(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float,
) -> subprocess.CompletedProcess[str]:
    """Run a command to its end (bounded by `timeout`); fail with its output unless it exits 0."""
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {done.returncode} in {cwd or Path.cwd()}:\n"
        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (tests bind their servers to loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_script(name: str) -> ModuleType:
    """A module of scripts/ (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def start_process(
    command: list[str], env: dict[str, str] | None, cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """`command` in its own process group (so that stop_process_group stops all it spawns),
    its output in `log`; `env=None` inherits this process's environment."""
    cwd.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str] | None, cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group, stopped (by its pid) with everything it spawned."""
    process = start_process(command, env, cwd, log)
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[Any], grace_s: float = 20) -> None:
    """SIGTERM the process group, SIGKILL it after `grace_s` (test servers keep no state)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


# What a check may raise while a server is still starting (connection refused, a 5xx body
# without the expected keys): retried, not reported. Anything else fails the test at once.
NOT_YET = (httpx.HTTPError, OSError, KeyError, IndexError, ValueError)


def wait_for(
    check: Callable[[], Any],
    timeout: float,
    what: str,
    process: subprocess.Popen[Any] | None = None,
    log: Path | None = None,
    *,
    retry_on: tuple[type[BaseException], ...] = NOT_YET,
    interval: float = 0.2,
) -> Any:
    """Poll `check` until it returns something truthy, and return that; fail at once if
    `process` exits, and say why with the tail of `log` (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: exited with {process.returncode}{tail(log)}")
        try:
            result = check()
        except retry_on as exc:
            last = exc
        else:
            if result:
                return result
        time.sleep(interval)
    because = f" (last: {last!r})" if last is not None else ""
    raise AssertionError(f"{what}: not done after {timeout:.0f}s{because}{tail(log)}")


def tail(log: Path | None, chars: int = 4000) -> str:
    """The end of a process's log, for a failure message ('' without a log)."""
    if log is None or not log.exists():
        return ""
    return "\n--- log ---\n" + log.read_text(encoding="utf-8", errors="replace")[-chars:]


def server_env(trained_model: Any, **serving: str) -> dict[str, str]:
    """The trained model's CLI environment with `FMOPS_SERVING__<KEY>` set for each of `serving`
    (single-process metrics: no PROMETHEUS_MULTIPROC_DIR)."""
    env = dict(trained_model.env)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update({f"FMOPS_SERVING__{k.upper()}": v for k, v in serving.items()})
    return env


def metric_value(text: str, metric: str, **labels: str) -> float:
    """Sum of the samples called `metric` whose labels include `labels` (0 when none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metric and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
