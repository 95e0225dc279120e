"""Prometheus config, alert rules and the Grafana dashboard: valid, firing when they should, and
referring only to metrics the code defines (the live /metrics check is in the integration tier).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from financemath_mlops.monitoring.metrics import ReportMetricsCollector
from financemath_mlops.monitoring.publish import REPORT_GAUGES
from tests.helpers import REPO_ROOT

PROMETHEUS = REPO_ROOT / "monitoring" / "prometheus"
GRAFANA = REPO_ROOT / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "financemath.json"
METRIC = re.compile(r"\b(fmops_[a-z0-9_]+)")
LABELS = 'job="financemath-api",instance="api:8000"'


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("`promtool` is not installed (Debian package `prometheus`)")
    return binary


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p.get("targets", [])]


def referenced_metrics() -> set[str]:
    """Every fmops_* series named by an alert rule or a dashboard query."""
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    return {name for expr in exprs for name in METRIC.findall(expr)}


def defined_series(registry: CollectorRegistry) -> set[str]:
    """Series names a registry can expose (histograms as _bucket/_count/_sum, counters _total)."""
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}
    names = set()
    for family in registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_promtool_accepts_the_config_and_the_rules():
    tool = promtool()
    for args in (["check", "config"], ["check", "rules"]):
        target = PROMETHEUS / ("prometheus.yml" if args[1] == "config" else "alerts.yml")
        done = subprocess.run([tool, *args, str(target)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_config_scrapes_the_service_and_loads_the_rules():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "financemath-api" and job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]


def test_rules_and_dashboard_use_only_metrics_the_code_defines():
    from financemath_mlops.serving.metrics import ServiceMetrics

    service = ServiceMetrics()  # includes the prediction-log counters and report gauges
    defined = defined_series(service.registry) | set(REPORT_GAUGES)
    referenced = referenced_metrics()
    assert referenced - defined == set()
    rule_metrics = {n for r in alert_rules() for n in METRIC.findall(r["expr"])}
    assert {
        "fmops_http_requests_total",
        "fmops_http_request_duration_seconds_bucket",
        "fmops_model_ready",
        "fmops_drift_share",
    } <= rule_metrics


# Input series and the alerts they must (and must not) raise, for `promtool test rules`.
RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{{labels}}}'
        values: '0x20'
      - series: 'fmops_http_requests_total{{{labels},endpoint="/predict",method="POST",status="200"}}'
        values: '0+90x20'
      - series: 'fmops_http_requests_total{{{labels},endpoint="/predict",method="POST",status="500"}}'
        values: '0+10x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict",le="0.1"}}'
        values: '0+50x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict",le="1.0"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict",le="+Inf"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/health",le="+Inf"}}'
        values: '0+100x20'
      - series: 'fmops_model_ready{{{labels}}}'
        values: '0x20'
      - series: 'fmops_drift_share{{{labels}}}'
        values: '0.1 0.1 0.4x18'
      - series: 'fmops_drift_share_threshold{{{labels}}}'
        values: '0.3x20'
      - series: 'fmops_performance_log_mae{{{labels}}}'
        values: '0.9x20'
      - series: 'fmops_performance_training_log_mae{{{labels}}}'
        values: '0.5x20'
      - series: 'fmops_prediction_log_dropped_total{{{labels},reason="queue_full"}}'
        values: '0+5x30'
    alert_rule_test:
      - eval_time: 1m
        alertname: FinanceMathInputDrift
        exp_alerts: []
      - eval_time: 3m
        alertname: FinanceMathInputDrift
        exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]
      - eval_time: 2m
        alertname: FinanceMathServiceDown
        exp_alerts: [{{exp_labels: {{severity: critical, {plain}}}}}]
      - eval_time: 12m
        alertname: FinanceMathHighErrorRate
        exp_alerts: [{{exp_labels: {{severity: critical, {plain}}}}}]
      - eval_time: 16m
        alertname: FinanceMathHighLatencyP99
        exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]
      - eval_time: 3m
        alertname: FinanceMathModelNotReady
        exp_alerts: [{{exp_labels: {{severity: critical, {plain}}}}}]
      - eval_time: 5m
        alertname: FinanceMathPerformanceDegraded
        exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]
      - eval_time: 25m
        alertname: FinanceMathPredictionLogDropping
        exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]
  - interval: 1m
    input_series:
      - series: 'fmops_http_requests_total{{{labels},endpoint="/predict",method="POST",status="200"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict",le="0.1"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict",le="+Inf"}}'
        values: '0+100x20'
      - series: 'fmops_model_ready{{{labels}}}'
        values: '1x20'
      - series: 'fmops_drift_share{{{labels}}}'
        values: '0.1x20'
      - series: 'fmops_drift_share_threshold{{{labels}}}'
        values: '0.3x20'
    alert_rule_test:
      - {{eval_time: 15m, alertname: FinanceMathHighErrorRate, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathHighLatencyP99, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathModelNotReady, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathInputDrift, exp_alerts: []}}
  - interval: 5m
    input_series:
      - series: 'fmops_drift_report_timestamp_seconds{{{labels}}}'
        values: '0x700'
    alert_rule_test:
      - {{eval_time: 40h, alertname: FinanceMathDriftReportStale, exp_alerts: []}}
      - eval_time: 55h
        alertname: FinanceMathDriftReportStale
        exp_alerts: [{{exp_labels: {{severity: info, {plain}}}}}]
"""


def test_each_alert_fires_when_it_should_and_only_then(tmp_path: Path):
    tool = promtool()
    # promtool compares annotations too; they are prose (checked by `check rules`), so the
    # firing logic is tested on a copy without them.
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(groups))
    plain = 'job: financemath-api, instance: "api:8000"'
    tests = tmp_path / "alerts_test.yml"
    tests.write_text(RULE_TESTS.format(rules=rules, labels=LABELS, plain=plain))
    tested = set(re.findall(r"alertname: (\w+)", tests.read_text()))
    assert tested == {rule["alert"] for rule in alert_rules()}  # every alert has a test
    done = subprocess.run([tool, "test", "rules", str(tests)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisions_the_dashboard_on_the_provisioned_datasource():
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/financemath.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == source["uid"] for p in panels)
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    titles = " | ".join(p["title"].lower() for p in panels)
    for needed in ("request rate", "error rate", "latency percentiles", "prediction distribution",
                   "model served", "drift share"):  # fmt: skip
        assert needed in titles
    assert all(p.get("targets") and all(t["expr"] for t in p["targets"]) for p in panels)


def test_report_gauges_are_described_even_before_a_report_exists(tmp_path: Path):
    registry = CollectorRegistry()
    registry.register(ReportMetricsCollector(tmp_path))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(ReportMetricsCollector(tmp_path))  # names are known up front
