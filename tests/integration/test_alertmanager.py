"""Our Alertmanager config in a real Alertmanager (Debian `prometheus-alertmanager`) on 127.0.0.1:
alerts reach the webhook receiver, and ModelNotReady silences the error-rate alert it explains."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port, start_process, stop_process_group, wait_for
from tests.integration.alerting import WebhookReceiver, alertmanager_config

pytestmark = pytest.mark.integration

LABELS = {"job": "financemath-api", "instance": "am-test:8000"}


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        pytest.skip("`prometheus-alertmanager` is not installed (Debian package of that name)")
    work: Path = tmp_path_factory.mktemp("alertmanager")
    receiver = WebhookReceiver()
    receiver.thread.start()
    (work / "alertmanager.yml").write_text(alertmanager_config(receiver.url))
    port = free_port()
    log = work / "alertmanager.log"
    process = start_process(
        [binary, f"--config.file={work / 'alertmanager.yml'}", f"--storage.path={work / 'data'}",
         "--cluster.listen-address=", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        None, work, log,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v2"
    try:
        wait_for(lambda: httpx.get(f"{api}/status", timeout=2).status_code == 200, 60,
                 "Alertmanager to start", process, log)  # fmt: skip
        yield {"api": api, "receiver": receiver}
    finally:
        stop_process_group(process)
        receiver.server.shutdown()
        receiver.server.server_close()


def post(api: str, *names: str, instance: str = "am-test:8000") -> None:
    alerts = [{"labels": {**LABELS, "instance": instance, "alertname": n, "severity": "critical"}}
              for n in names]  # fmt: skip
    assert httpx.post(f"{api}/alerts", json=alerts, timeout=10).status_code == 200


def test_a_firing_alert_reaches_the_webhook_receiver(alertmanager):
    post(alertmanager["api"], "FinanceMathServiceDown", instance="delivery:8000")
    _, alert = wait_for(lambda: alertmanager["receiver"].alert("FinanceMathServiceDown"), 30,
                        "the webhook to receive the alert")  # fmt: skip
    assert alert["labels"]["instance"] == "delivery:8000"


def test_model_not_ready_silences_the_error_rate_alert(alertmanager):
    post(alertmanager["api"], "FinanceMathModelNotReady", "FinanceMathHighErrorRate")

    def states() -> dict[str, dict[str, Any]] | None:
        found = httpx.get(f"{alertmanager['api']}/alerts", timeout=5,
                          params={"filter": 'instance="am-test:8000"'}).json()  # fmt: skip
        by_name = {a["labels"]["alertname"]: a["status"] for a in found}
        done = len(by_name) == 2 and by_name["FinanceMathHighErrorRate"]["inhibitedBy"]
        return by_name if done else None

    status = wait_for(states, 30, "Alertmanager to inhibit the error-rate alert")
    assert status["FinanceMathHighErrorRate"]["state"] == "suppressed"
    assert status["FinanceMathModelNotReady"]["state"] == "active"
