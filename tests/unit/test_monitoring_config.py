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

from financemath_mlops.monitoring.prometheus import ReportMetricsCollector
from financemath_mlops.monitoring.publish import REPORT_GAUGES
from tests.faults.matrix import ROWS as FAULT_ROWS
from tests.helpers import REPO_ROOT

PROMETHEUS = REPO_ROOT / "monitoring" / "prometheus"
GRAFANA = REPO_ROOT / "monitoring" / "grafana"
ALERTMANAGER = REPO_ROOT / "monitoring" / "alertmanager"
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
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["financemath-api"]
    assert config["scrape_configs"][0] is job and job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["api:8000"]
    # MLflow and Prefect only where they run: DNS discovery, no always-down static target.
    assert jobs["mlflow"]["dns_sd_configs"][0]["names"] == ["mlflow"]
    assert jobs["prefect"]["metrics_path"] == "/api/metrics"
    (manager,) = config["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]


def amtool() -> str:
    binary = shutil.which("amtool")
    if binary is None:
        pytest.skip("`amtool` is not installed (Debian package `prometheus-alertmanager`)")
    return binary


def test_amtool_accepts_the_alertmanager_config_and_routes_to_the_webhook():
    tool = amtool()
    config = ALERTMANAGER / "alertmanager.yml"
    done = subprocess.run([tool, "check-config", str(config)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for labels in (["alertname=FinanceMathHighErrorRate", "severity=critical"],
                   ["alertname=FinanceMathDriftReportStale", "severity=info"]):  # fmt: skip
        done = subprocess.run(
            [tool, "config", "routes", "test", f"--config.file={config}", *labels],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0 and done.stdout.strip() == "webhook", done.stdout + done.stderr


def test_model_not_ready_inhibits_the_alerts_it_explains():
    config = yaml.safe_load((ALERTMANAGER / "alertmanager.yml").read_text())
    (rule,) = [r for r in config["inhibit_rules"] if "FinanceMathModelNotReady" in str(r)]
    (target,) = rule["target_matchers"]
    silenced = re.fullmatch(r'alertname=~"(.+)"', target).group(1).split("|")
    assert "FinanceMathHighErrorRate" in silenced
    assert set(silenced) <= {rule["alert"] for rule in alert_rules()}  # no typo'd alert names
    assert rule["equal"] == ["job", "instance"]


def test_rule_thresholds_match_the_monitoring_settings():
    from financemath_mlops.config import MonitoringSettings

    cfg = MonitoringSettings()
    exprs = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert (
        f"{cfg.degraded_log_mae_ratio} * fmops_performance_training_log_mae"
        in (exprs["FinanceMathPerformanceDegraded"])
    )
    for name in ("FinanceMathPerformanceDegraded", "FinanceMathInputDrift"):
        assert f"_rows >= {cfg.min_rows}" in exprs[name]


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
# Test 1: a broken world where every service and report alert fires; test 2: a healthy one with
# the traps the rules must not fall into (failing /health probes, a quiet instance with one error,
# drift and degradation on too few rows, slow batches within their own budget); tests 3-6: the
# clock-driven rules (report staleness, no report at all, model age, no target at all).
RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{{labels}}}'
        values: '0x30'
      - series: 'up{{job="mlflow",instance="mlflow:5000"}}'
        values: '0x30'
      - series: 'up{{job="prefect",instance="prefect-server:4200"}}'
        values: '1x30'
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
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict/batch",le="5.0"}}'
        values: '0+50x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict/batch",le="10.0"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict/batch",le="+Inf"}}'
        values: '0+100x20'
      - series: 'fmops_model_ready{{{labels}}}'
        values: '0x30'
      - series: 'fmops_model_reloads_total{{{labels},result="failed"}}'
        values: '0+1x30'
      - series: 'fmops_drift_share{{{labels}}}'
        values: '0.1 0.1 0.4x18'
      - series: 'fmops_drift_share_threshold{{{labels}}}'
        values: '0.3x20'
      - series: 'fmops_drift_current_rows{{{labels}}}'
        values: '100x20'
      - series: 'fmops_performance_log_mae{{{labels}}}'
        values: '0.9x20'
      - series: 'fmops_performance_training_log_mae{{{labels}}}'
        values: '0.5x20'
      - series: 'fmops_performance_rows{{{labels}}}'
        values: '60x20'
      - series: 'fmops_prediction_log_dropped_total{{{labels},reason="queue_full"}}'
        values: '0+5x30'
      - series: 'fmops_prediction_log_durable{{{labels}}}'
        values: '1 1 0x28'
      - series: 'fmops_prediction_log_disk_free_bytes{{{labels}}}'
        values: '500-10x30'
      - series: 'fmops_prediction_log_disk_size_bytes{{{labels}}}'
        values: '1000x30'
      - series: 'fmops_dependency_up{{{labels},name="tracking_store"}}'
        values: '1 1 0x28'
      - series: 'fmops_dependency_up{{{labels},name="prediction_log"}}'
        values: '0x30'
    alert_rule_test:
      - {{eval_time: 1m, alertname: FinanceMathInputDrift, exp_alerts: []}}
      - {{eval_time: 3m, alertname: FinanceMathInputDrift, exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]}}
      - {{eval_time: 2m, alertname: FinanceMathServiceDown, exp_alerts: [{{exp_labels: {{severity: critical, {plain}}}}}]}}
      - {{eval_time: 15m, alertname: FinanceMathServiceAbsent, exp_alerts: []}}
      - {{eval_time: 12m, alertname: FinanceMathHighErrorRate, exp_alerts: [{{exp_labels: {{severity: critical, {plain}}}}}]}}
      - {{eval_time: 16m, alertname: FinanceMathHighLatencyP99, exp_alerts: [{{exp_labels: {{severity: warning, endpoint: /predict, {plain}}}}}]}}
      - {{eval_time: 16m, alertname: FinanceMathHighBatchLatencyP99, exp_alerts: [{{exp_labels: {{severity: warning, endpoint: /predict/batch, {plain}}}}}]}}
      - {{eval_time: 3m, alertname: FinanceMathModelNotReady, exp_alerts: [{{exp_labels: {{severity: critical, {plain}}}}}]}}
      - {{eval_time: 10m, alertname: FinanceMathModelReloadFailing, exp_alerts: []}}
      - {{eval_time: 20m, alertname: FinanceMathModelReloadFailing, exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]}}
      - {{eval_time: 5m, alertname: FinanceMathPerformanceDegraded, exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]}}
      - {{eval_time: 25m, alertname: FinanceMathPredictionLogDropping, exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]}}
      - {{eval_time: 2m, alertname: FinanceMathPredictionLogNotDurable, exp_alerts: []}}
      - {{eval_time: 4m, alertname: FinanceMathPredictionLogNotDurable, exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]}}
      - {{eval_time: 15m, alertname: FinanceMathPredictionLogDiskFilling, exp_alerts: [{{exp_labels: {{severity: warning, {plain}}}}}]}}
      - {{eval_time: 5m, alertname: FinanceMathDependencyDown, exp_alerts: []}}
      - {{eval_time: 8m, alertname: FinanceMathDependencyDown, exp_alerts: [{{exp_labels: {{severity: warning, name: tracking_store, {plain}}}}}]}}
      - {{eval_time: 6m, alertname: FinanceMathMLOpsServerDown, exp_alerts: [{{exp_labels: {{severity: warning, job: mlflow, instance: "mlflow:5000"}}}}]}}
  - interval: 1m
    input_series:
      - series: 'up{{{labels}}}'
        values: '1x20'
      - series: 'up{{job="prefect",instance="prefect-server:4200"}}'
        values: '1x20'
      - series: 'fmops_http_requests_total{{{labels},endpoint="/predict",method="POST",status="200"}}'
        values: '0+100x20'
      - series: 'fmops_http_requests_total{{{labels},endpoint="/health",method="GET",status="500"}}'
        values: '0+100x20'
      - series: 'fmops_http_requests_total{{{labels},endpoint="/metrics",method="GET",status="500"}}'
        values: '0+100x20'
      - series: 'fmops_http_requests_total{{job="financemath-api",instance="quiet:8000",endpoint="/predict",method="POST",status="500"}}'
        values: '0+0.2x20'
      - series: 'fmops_http_requests_total{{job="financemath-api",instance="quiet:8000",endpoint="/predict",method="POST",status="200"}}'
        values: '0+0.2x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict",le="0.1"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict",le="+Inf"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict/batch",le="2.5"}}'
        values: '0+100x20'
      - series: 'fmops_http_request_duration_seconds_bucket{{{labels},endpoint="/predict/batch",le="+Inf"}}'
        values: '0+100x20'
      - series: 'fmops_model_ready{{{labels}}}'
        values: '1x20'
      - series: 'fmops_model_reloads_total{{{labels},result="unchanged"}}'
        values: '0+1x20'
      - series: 'fmops_model_reloads_total{{{labels},result="failed"}}'
        values: '0x20'
      - series: 'fmops_drift_share{{{labels}}}'
        values: '0.5x20'
      - series: 'fmops_drift_share_threshold{{{labels}}}'
        values: '0.3x20'
      - series: 'fmops_drift_current_rows{{{labels}}}'
        values: '10x20'
      - series: 'fmops_drift_report_timestamp_seconds{{{labels}}}'
        values: '0x20'
      - series: 'fmops_performance_log_mae{{{labels}}}'
        values: '0.9x20'
      - series: 'fmops_performance_training_log_mae{{{labels}}}'
        values: '0.5x20'
      - series: 'fmops_performance_rows{{{labels}}}'
        values: '10x20'
      - series: 'fmops_prediction_log_dropped_total{{{labels},reason="queue_full"}}'
        values: '0x20'
      - series: 'fmops_prediction_log_durable{{{labels}}}'
        values: '1x20'
      - series: 'fmops_prediction_log_disk_free_bytes{{{labels}}}'
        values: '500x20'
      - series: 'fmops_prediction_log_disk_size_bytes{{{labels}}}'
        values: '1000x20'
      - series: 'fmops_dependency_up{{{labels},name="tracking_store"}}'
        values: '1 0 0 1x17'
    alert_rule_test:
      - {{eval_time: 15m, alertname: FinanceMathServiceDown, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathServiceAbsent, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathHighErrorRate, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathHighLatencyP99, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathHighBatchLatencyP99, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathModelNotReady, exp_alerts: []}}
      - {{eval_time: 18m, alertname: FinanceMathModelReloadFailing, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathInputDrift, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathPerformanceDegraded, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathPredictionLogDropping, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathPredictionLogNotDurable, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathPredictionLogDiskFilling, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathDependencyDown, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathMLOpsServerDown, exp_alerts: []}}
      - {{eval_time: 15m, alertname: FinanceMathDriftReportMissing, exp_alerts: []}}
  - interval: 1m
    input_series: [{{series: 'fmops_model_ready{{{labels}}}', values: '1x20'}}]
    alert_rule_test:
      - {{eval_time: 5m, alertname: FinanceMathServiceAbsent, exp_alerts: []}}
      - {{eval_time: 12m, alertname: FinanceMathServiceAbsent, exp_alerts: [{{exp_labels: {{severity: critical, job: financemath-api}}}}]}}
"""

# The clock-driven rules (days, not minutes), evaluated hourly to stay fast.
CLOCK_RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1h
tests:
  - interval: 5m
    input_series: [{{series: 'fmops_drift_report_timestamp_seconds{{{labels}}}', values: '0x400'}}]
    alert_rule_test:
      - {{eval_time: 20h, alertname: FinanceMathDriftReportStale, exp_alerts: []}}
      - {{eval_time: 27h, alertname: FinanceMathDriftReportStale, exp_alerts: [{{exp_labels: {{severity: info, {plain}}}}}]}}
  - interval: 5m
    input_series: [{{series: 'up{{{labels}}}', values: '1x400'}}]
    alert_rule_test:
      - {{eval_time: 12h, alertname: FinanceMathDriftReportMissing, exp_alerts: []}}
      - {{eval_time: 26h, alertname: FinanceMathDriftReportMissing, exp_alerts: [{{exp_labels: {{severity: info, job: financemath-api}}}}]}}
  - interval: 5m
    input_series:
      - series: 'fmops_model_trained_timestamp_seconds{{{labels}}}'
        values: '1x2400'
      - series: 'fmops_model_trained_timestamp_seconds{{job="financemath-api",instance="unknown:8000"}}'
        values: '0x2400'
    alert_rule_test:
      - {{eval_time: 6d, alertname: FinanceMathModelStale, exp_alerts: []}}
      - {{eval_time: 8d, alertname: FinanceMathModelStale, exp_alerts: [{{exp_labels: {{severity: info, {plain}}}}}]}}
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
    fired: set[str] = set()
    quiet: set[str] = set()
    for name, template in (("alerts_test.yml", RULE_TESTS), ("clock_test.yml", CLOCK_RULE_TESTS)):
        tests = tmp_path / name
        tests.write_text(template.format(rules=rules, labels=LABELS, plain=plain))
        for case in yaml.safe_load(tests.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
        done = subprocess.run([tool, "test", "rules", str(tests)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    every_alert = {rule["alert"] for rule in alert_rules()}
    assert fired == every_alert and quiet == every_alert  # each one firing and not firing


def test_fault_alerts_link_their_row_of_the_fault_matrix():
    """The prediction-log and dependency alerts each carry a runbook_url to a row that exists."""
    rows = {row.id for row in FAULT_ROWS}  # each has its test: tests/unit/test_fault_matrix.py
    linked = {
        rule["alert"]: rule["annotations"]["runbook_url"]
        for rule in alert_rules()
        if "runbook_url" in rule.get("annotations", {})
    }
    assert {"FinanceMathPredictionLogDropping", "FinanceMathPredictionLogNotDurable",
            "FinanceMathPredictionLogDiskFilling", "FinanceMathDependencyDown"} <= set(linked)  # fmt: skip
    for alert, url in linked.items():
        page, _, anchor = url.partition("#")
        assert page == "docs/reliability.md" and anchor in rows, (alert, url, sorted(rows))


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


SHARE_GAUGES = {"fmops_drift_share", "fmops_drift_share_threshold", "fmops_performance_accuracy"}


def test_percent_axes_show_only_shares():
    """A rate or a distance on a percent axis misreads by 100x (0.5 errors/s showed as 50%)."""
    board = json.loads(DASHBOARD.read_text())
    checked = 0
    for panel in board["panels"]:
        if panel.get("fieldConfig", {}).get("defaults", {}).get("unit") != "percentunit":
            continue
        own_unit = {
            o["matcher"]["options"]
            for o in panel["fieldConfig"].get("overrides", [])
            if o["matcher"]["id"] == "byFrameRefID"
            and any(p["id"] == "unit" and p["value"] != "percentunit" for p in o["properties"])
        }
        for target in panel["targets"]:
            if target["refId"] in own_unit:
                continue
            names = set(METRIC.findall(target["expr"]))
            is_ratio = " / " in target["expr"] and len(names) == 1
            assert is_ratio or names <= SHARE_GAUGES, (panel["title"], target["expr"])
            checked += 1
    assert checked >= 4


def test_every_dashboard_query_names_a_series_the_service_exports():
    from financemath_mlops.serving.metrics import ServiceMetrics

    exported = defined_series(ServiceMetrics().registry) | set(REPORT_GAUGES)
    for expr in dashboard_exprs():
        names = set(METRIC.findall(expr))
        assert names and names <= exported, expr
