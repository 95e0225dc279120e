"""Plain helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (tests bind their servers to loopback only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[Any]:
    """A server in its own process group, stopped (by its pid) with everything it spawned."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop_process_group(process)


def stop_process_group(process: Any, grace_s: float = 5) -> None:
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
        process.wait(timeout=grace_s)


def wait_for(check: Callable[[], bool], timeout: float, what: str, process: Any, log: Path) -> None:
    """Poll `check` until true; fail at once, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what}: exited with {process.returncode}\n{tail(log)}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not ready after {timeout:.0f}s\n{tail(log)}")


def tail(log: Path, chars: int = 4000) -> str:
    return "--- log ---\n" + log.read_text(encoding="utf-8", errors="replace")[-chars:]
