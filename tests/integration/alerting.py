"""Real Alertmanager processes for the tests, and the webhook receiver they deliver to."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.helpers import REPO_ROOT

ALERTMANAGER_CONFIG = REPO_ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(command: list[str], env: dict[str, str] | None, workdir: Path, name: str):
    with (workdir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            command, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped with its children
        )  # fmt: skip


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def wait_for(check: Callable[[], Any], timeout: float, what: str, process=None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError, OSError, KeyError, IndexError, ValueError):
            result = check()
            if result:
                return result
        time.sleep(0.25)
    raise AssertionError(f"{what}: not done after {timeout:.0f}s")


class WebhookReceiver:
    """Alertmanager's webhook target: keeps every notification with its arrival time."""

    def __init__(self) -> None:
        received: list[tuple[float, dict[str, Any]]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length", 0)), 1_000_000)
                received.append((time.monotonic(), json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def alert(self, name: str) -> tuple[float, dict[str, Any]] | None:
        for at, body in self.received:
            for alert in body.get("alerts", []):
                if alert["labels"].get("alertname") == name and alert["status"] == "firing":
                    return at, alert
        return None


def alertmanager_config(webhook_url: str) -> str:
    """Our alertmanager.yml with the webhook pointed at ``webhook_url`` and no batching delay."""
    manager = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    manager["route"].update(group_wait="1s", group_interval="1s")
    manager["receivers"][0]["webhook_configs"][0]["url"] = webhook_url
    return yaml.safe_dump(manager)
