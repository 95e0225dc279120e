"""Alertmanager for the tests: our config pointed at a webhook receiver the test runs."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

from tests.helpers import REPO_ROOT

ALERTMANAGER_CONFIG = REPO_ROOT / "monitoring" / "alertmanager" / "alertmanager.yml"


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
