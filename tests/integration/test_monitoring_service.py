"""Alerts and dashboards against the real service: names in a live /metrics, a real Prometheus.

The app runs under uvicorn on the trained sample model; a real Prometheus (Debian package
`prometheus`; skipped with a reason where absent) loads our prometheus.yml, pointed at 127.0.0.1,
with our alert rules.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from financemath_mlops.monitoring.publish import publish_latest
from financemath_mlops.serving.schemas import EXAMPLE_RECORD
from tests.helpers import (
    REPO_ROOT,
    free_port,
    server_env,
    start_process,
    stop_process_group,
    wait_for,
)

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO_ROOT / "monitoring" / "prometheus"
DASHBOARD = REPO_ROOT / "monitoring" / "grafana" / "dashboards" / "financemath.json"
METRIC = re.compile(r"\b(fmops_[a-z0-9_]+)")
MONITORING_PREFIXES = ("fmops_drift_", "fmops_performance_", "fmops_prediction_log_")


def rule_metrics() -> set[str]:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    return {n for g in groups for r in g["rules"] for n in METRIC.findall(r["expr"])}


def dashboard_metrics() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return {n for expr in exprs for n in METRIC.findall(expr)}


def is_monitoring_metric(name: str) -> bool:
    """Exported by financemath_mlops.monitoring.prometheus rather than serving.metrics."""
    return name.startswith(MONITORING_PREFIXES)


@pytest.fixture(scope="module")
def service(trained_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The app serving the trained model @champion, with a drift report already published."""
    workdir = tmp_path_factory.mktemp("monitoring-service")
    reports = workdir / "reports"
    publish_latest(reports, "drift", {"share": 0.1, "drifted": 3, "columns": 33,
                                      "dataset_drift": False, "drift_share_threshold": 0.3,
                                      "mean_cosine_distance": 0.01, "current_rows": 120})  # fmt: skip
    publish_latest(reports, "performance", {"mae": 10.0, "rmse": 20.0, "log_mae": 0.5,
                                            "accuracy": 0.2, "rows": 60, "training_mae": 9.0,
                                            "training_log_mae": 0.45})  # fmt: skip
    env = server_env(trained_model, model_name=trained_model.model_name, alias="champion")
    env.update(
        FMOPS_PATHS__REPORTS_DIR=str(reports),
        FMOPS_PATHS__PREDICTIONS_DIR=str(workdir / "predictions"),
        FMOPS_CONFIG=str(REPO_ROOT / "configs" / "default.yaml"),
    )
    port = free_port()
    process = start_process(
        [sys.executable, "-m", "uvicorn", "financemath_mlops.serving.app:app",
         "--host", "127.0.0.1", "--port", str(port)],
        env, workdir, workdir / "uvicorn.log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200, 120,
                 "the service to load the model", process)  # fmt: skip
        with httpx.Client(base_url=base, timeout=30) as client:
            for _ in range(3):
                assert client.post("/predict", json=EXAMPLE_RECORD).status_code == 200
            assert client.post("/predict", json={"question": ""}).status_code == 422
            metrics = client.get("/metrics").text
        yield {"base": base, "port": port, "metrics": metrics, "workdir": workdir}
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{(workdir / 'uvicorn.log').read_text()[-3000:]}") from None
    finally:
        stop_process_group(process)


def live_series(text: str) -> set[str]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_alert_rules_and_dashboard_name_only_metrics_the_live_service_exports(service):
    live = live_series(service["metrics"])
    referenced = rule_metrics() | dashboard_metrics()
    from_service = {n for n in referenced if not is_monitoring_metric(n)}
    assert from_service - live == set(), "rules/dashboard name metrics the service does not export"
    from_monitoring = referenced - from_service
    assert from_monitoring - live == set()


def test_a_real_prometheus_loads_our_config_and_rules_and_scrapes_the_service(
    service, tmp_path: Path
):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("the `prometheus` binary is not installed (Debian package `prometheus`)")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    config["scrape_configs"][0]["static_configs"][0]["targets"] = [f"127.0.0.1:{service['port']}"]
    config["scrape_configs"] = config["scrape_configs"][:1]  # the service only: no compose names
    config.pop("alerting")  # Alertmanager: tests/integration/test_operator_loop.py
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = start_process(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
         "--log.level=warn"],
        None, tmp_path, tmp_path / "prometheus.log",
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(expr: str) -> list[dict[str, Any]]:
        return httpx.get(f"{api}/query", params={"query": expr}, timeout=5).json()["data"]["result"]

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{api}/rules", timeout=5).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    try:

        def api_target() -> dict[str, Any] | None:
            if not query('up{job="financemath-api"} == 1'):
                return None
            targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
            ours = [t for t in targets if t.get("labels", {}).get("job") == "financemath-api"]
            return ours[0] if ours else None

        target = wait_for(api_target, 60, "Prometheus to scrape the service", process)
        assert target["labels"]["job"] == "financemath-api" and target["health"] == "up"
        assert float(query("fmops_model_ready")[0]["value"][1]) == 1.0
        rules = wait_for(rules_evaluated, 90, "the alert rules to be evaluated", process)
        names = {r["name"] for r in rules}
        assert {"FinanceMathHighErrorRate", "FinanceMathHighLatencyP99", "FinanceMathInputDrift",
                "FinanceMathModelNotReady"} <= names  # fmt: skip
        assert all(r["health"] == "ok" for r in rules), [r.get("lastError") for r in rules]
        firing = {a["metric"]["alertname"] for a in query("ALERTS")}
        assert not firing & {"FinanceMathModelNotReady", "FinanceMathServiceDown"}
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n{(tmp_path / 'prometheus.log').read_text()[-3000:]}"
        ) from None
    finally:
        stop_process_group(process)


def test_the_service_exports_when_its_model_was_trained(service):
    """The model-age alert's clock: the served model's MLmodel creation time, not 0 (unknown)."""
    from prometheus_client.parser import text_string_to_metric_families

    (value,) = [
        s.value
        for family in text_string_to_metric_families(service["metrics"])
        for s in family.samples
        if s.name == "fmops_model_trained_timestamp_seconds"
    ]
    assert time.time() - 86400 < value <= time.time()  # trained by this session's fixture
