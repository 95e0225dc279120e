"""Processes the browser tests start and wait for (started and stopped by tests.helpers)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import start_process, tail


@dataclass
class Started:
    """A process started in the background; :meth:`wait` blocks until it is usable."""

    name: str
    process: subprocess.Popen[Any]
    log_path: Path
    ready: Callable[[], bool]
    base_url: str = ""

    def log(self) -> str:
        return tail(self.log_path)

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
                    f"{self.name} exited with {self.process.returncode}{self.log()}"
                )
            time.sleep(0.2)
        raise AssertionError(f"{self.name} not ready after {timeout:.0f}s{self.log()}")


def start(
    name: str, command: list[str], workdir: Path, env: dict[str, str], ready: Callable[[], bool]
) -> Started:
    log_path = workdir / f"{name}.log"
    return Started(name, start_process(command, env, workdir, log_path), log_path, ready)


def http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=2).status_code == 200
