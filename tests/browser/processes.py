"""Processes the browser tests start: 127.0.0.1 only, free ports, stopped by pid (group)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen[Any]) -> None:
    """Stop a process we started and everything it spawned (its own process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@dataclass
class Started:
    """A process started in the background; :meth:`wait` blocks until it is usable."""

    name: str
    process: subprocess.Popen[Any]
    log_path: Path
    ready: Callable[[], bool]
    base_url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError, OSError):
                if self.ready():
                    return
            if self.process.poll() is not None:
                if self.ready():  # a one-shot command that finished
                    return
                raise AssertionError(
                    f"{self.name} exited with {self.process.returncode}\n{self.log()}"
                )
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout:.0f}s\n{self.log()}")


def start(
    name: str, command: list[str], workdir: Path, env: dict[str, str], ready: Callable[[], bool]
) -> Started:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Started(name, process, log_path, ready)


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=2).status_code == 200
