"""The probe command of the Kubernetes exec probes: 0 only on a 200, 1 on 503 or no server,
and light enough to run every few seconds (no web framework, no settings imported)."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading

import pytest

from financemath_mlops.serving import probe


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # /health alive, /ready still loading
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_200_passes_and_503_fails(port, capsys):
    assert probe.main(["/health", "--port", str(port)]) == 0
    assert probe.main(["/ready", "--port", str(port)]) == 1
    assert "503" in capsys.readouterr().err


def test_no_server_fails_fast():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        free = sock.getsockname()[1]
    assert probe.main(["/health", "--port", str(free), "--timeout", "2"]) == 1


def test_only_known_paths():
    with pytest.raises(SystemExit):
        probe.main(["/admin/reload"])


def test_probe_imports_nothing_heavy():
    code = (
        "import sys, financemath_mlops.serving.probe; "
        "heavy = [m for m in ('fastapi', 'mlflow', 'lightgbm', 'onnxruntime', 'pydantic') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
