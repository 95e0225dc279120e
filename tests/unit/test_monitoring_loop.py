"""The pieces of the operator's loop that need no server: report history, evidence, the event."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from financemath_mlops.config import MonitoringSettings
from financemath_mlops.flows import events
from financemath_mlops.monitoring.evidence import drift_verdict, performance_verdict
from financemath_mlops.monitoring.history import (
    INDEX_FILE,
    history_table,
    read_history,
    record_report,
)
from tests.helpers import REPO_ROOT

DRIFTED = {"share": 0.5, "drift_share_threshold": 0.3, "dataset_drift": True, "current_rows": 80}


def test_history_keeps_every_report_in_order_and_filters_by_kind(tmp_path: Path):
    for n in range(3):
        record_report(tmp_path, "drift", {**DRIFTED, "report": f"reports/d{n}"})
    record_report(tmp_path, "performance", {"log_mae": 0.6, "training_log_mae": 0.5, "rows": 40})
    entries = read_history(tmp_path)
    assert [e["kind"] for e in entries] == ["drift"] * 3 + ["performance"]
    assert [e["report"] for e in read_history(tmp_path, "drift")] == [
        f"reports/d{n}" for n in range(3)
    ]
    assert [e["report"] for e in read_history(tmp_path, "drift", limit=2)] == [
        "reports/d1",
        "reports/d2",
    ]
    assert all(e["time"].endswith("+00:00") for e in entries)
    table = history_table(entries)
    assert "share 50% of None columns" in table and "log-MAE 0.600 (training 0.500)" in table


def test_history_skips_a_torn_line_and_writes_strict_json(tmp_path: Path):
    record_report(tmp_path, "drift", {**DRIFTED, "mean_cosine_distance": float("nan")})
    with (tmp_path / INDEX_FILE).open("a") as handle:
        handle.write('{"kind": "drift", "sha')  # a crash mid-write
    (entry,) = read_history(tmp_path)
    assert entry["mean_cosine_distance"] is None  # NaN is not JSON
    json.loads((tmp_path / INDEX_FILE).read_text().splitlines()[0])
    assert read_history(tmp_path / "nowhere") == []


@pytest.mark.parametrize(
    ("numbers", "retrain", "why"),
    [
        (DRIFTED, True, "50% of columns drifted"),
        ({**DRIFTED, "current_rows": 29}, False, "only 29 current rows (< 30)"),
        ({**DRIFTED, "dataset_drift": False, "share": 0.1}, False, "below"),
    ],
)
def test_drift_is_evidence_only_on_enough_rows(numbers, retrain, why):
    verdict = drift_verdict(numbers, MonitoringSettings().min_rows)
    assert verdict.retrain is retrain and why in verdict.reason


@pytest.mark.parametrize(
    ("numbers", "retrain", "why"),
    [
        ({"log_mae": 0.9, "training_log_mae": 0.5, "rows": 60}, True, "> 1.25x"),
        ({"log_mae": 0.6, "training_log_mae": 0.5, "rows": 60}, False, "within 1.25x"),
        ({"log_mae": 0.9, "training_log_mae": 0.5, "rows": 10}, False, "only 10 labelled rows"),
        ({"log_mae": 0.9, "training_log_mae": None, "rows": 60}, False, "no training-time"),
    ],
)
def test_degraded_performance_is_evidence_beyond_the_ratio(numbers, retrain, why):
    cfg = MonitoringSettings()
    verdict = performance_verdict(numbers, cfg.degraded_log_mae_ratio, cfg.min_rows)
    assert verdict.retrain is retrain and why in verdict.reason


def test_the_trigger_expects_the_event_the_flow_emits_for_the_served_model():
    trigger = events.retrain_trigger()
    assert trigger.expect == {events.RETRAIN_REQUESTED}
    resource = events.model_resource({"name": "financemath-regressor", "version": "3"})
    pattern = trigger.match.root["prefect.resource.id"]  # Prefect's ResourceSpecification
    assert pattern == "financemath.model.*"
    assert resource["prefect.resource.id"].startswith(pattern.rstrip("*"))
    assert resource["financemath.model.version"] == "3"
    assert trigger.name == events.TRIGGER_NAME and trigger.threshold == 1


def test_prefect_yaml_carries_the_same_trigger():
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["nightly-retrain"]["triggers"] == [events.trigger_spec()]
    assert by_name["scheduled-monitoring"]["schedules"][0]["interval"] == (
        MonitoringSettings().schedule_hours * 3600
    )


def test_retraining_is_requested_once_per_served_model(tmp_path: Path):
    from financemath_mlops.flows.monitoring import RETRAIN_REQUEST_KIND, earlier_request

    v1 = {"name": "financemath-regressor", "version": "1", "run_id": "a"}
    assert earlier_request(tmp_path, v1) is None  # nothing asked yet
    record_report(tmp_path, RETRAIN_REQUEST_KIND, {"model": v1, "reasons": ["drift: ..."]})
    assert earlier_request(tmp_path, dict(v1))["model"] == v1  # same champion: already asked
    v2 = {**v1, "version": "2", "run_id": "b"}
    assert earlier_request(tmp_path, v2) is None  # a new champion may drift again
    record_report(tmp_path, "drift", DRIFTED)  # other kinds in between do not matter
    assert earlier_request(tmp_path, v1) is not None


def where_of(settings) -> dict:
    """What a report job reads besides its section: the store, the folders, the served model."""
    return {"store": settings.mlflow, "features": settings.features, "paths": settings.paths,
            "served_uri": "models:/financemath-regressor@champion"}  # fmt: skip


def input_drift_fires(metrics: dict[str, float]) -> bool:
    """FinanceMathInputDrift's expression (alerts.yml) on one scrape: absent series never fire."""
    share, threshold = metrics.get("fmops_drift_share"), metrics.get("fmops_drift_share_threshold")
    rows = metrics.get("fmops_drift_current_rows")
    if share is None or threshold is None or rows is None:
        return False
    return share >= threshold and rows >= MonitoringSettings().min_rows


def test_a_window_too_small_publishes_a_skip_that_resolves_the_drift_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from financemath_mlops.config import load_settings
    from financemath_mlops.monitoring import jobs
    from financemath_mlops.monitoring.inputs import TooFewRows, require_rows
    from financemath_mlops.monitoring.publish import (
        latest_report_metrics,
        publish_latest,
        read_latest,
    )

    reports = tmp_path / "reports"
    settings = load_settings(overrides={"paths": {"reports_dir": str(reports)}})
    publish_latest(reports, "drift", {**DRIFTED, "drift_share_threshold": 0.3})  # last window
    drifted = latest_report_metrics(reports)
    assert input_drift_fires(drifted)

    def six_rows(_cfg, _job, **_where):  # what run_drift does on a window of six predictions
        require_rows({"current": 6}, settings.monitoring.min_rows, "the log", "widen the window")

    monkeypatch.setattr(jobs, "run_drift", six_rows)
    with pytest.raises(TooFewRows, match="only 6 current rows"):
        jobs.run_scheduled_drift(settings.monitoring, jobs.DriftJob(), **where_of(settings))
    section = read_latest(reports)["drift"]
    assert section["current_rows"] == 6 and section["share"] is None
    assert section["dataset_drift"] is False and "only 6 current rows" in section["skipped"]
    skipped = latest_report_metrics(reports)
    assert skipped["fmops_drift_current_rows"] == 6 and skipped["fmops_drift_detected"] == 0
    assert "fmops_drift_share" not in skipped
    assert not input_drift_fires(skipped)
    promtool_says_input_drift(tmp_path, drifted, fires=True)
    promtool_says_input_drift(tmp_path, skipped, fires=False)


def test_the_command_line_publishes_nothing_for_too_few_rows(tmp_path: Path, monkeypatch):
    """Only the scheduled flow publishes a skip; a hand run on a small file exits 2, no trace."""
    from financemath_mlops.config import load_settings
    from financemath_mlops.monitoring import jobs
    from financemath_mlops.monitoring.inputs import TooFewRows, require_rows

    settings = load_settings(overrides={"paths": {"reports_dir": str(tmp_path)}})

    def six_rows(_cfg, _job, **_where):
        require_rows({"current": 6}, 30, "six.parquet", "pass a larger --current")

    monkeypatch.setattr(jobs, "run_drift", six_rows)
    with pytest.raises(TooFewRows):
        job = jobs.DriftJob(publish=False)  # --no-publish
        jobs.run_scheduled_drift(settings.monitoring, job, **where_of(settings))
    assert not (tmp_path / "latest.json").exists()


def promtool_says_input_drift(tmp_path: Path, metrics: dict[str, float], fires: bool) -> None:
    """`promtool test rules`: the real rule, fed the gauges these metrics export, fires or not."""
    import shutil
    import subprocess

    tool = shutil.which("promtool")
    if tool is None:
        return  # the Python reading above still checked the expression
    groups = yaml.safe_load((REPO_ROOT / "monitoring/prometheus/alerts.yml").read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)  # prose; promtool would compare it
    rules = tmp_path / "alerts.yml"
    rules.write_text(yaml.safe_dump(groups))
    labels = {"job": "financemath-api", "instance": "api:8000"}
    series = [
        {"series": name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}",
         "values": f"{value}x10"}
        for name, value in metrics.items()
    ]  # fmt: skip
    expected = [{"exp_labels": {"severity": "warning", **labels}}] if fires else []
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": "5m", "alertname": "FinanceMathInputDrift", "exp_alerts": expected}
            ],
        }],
    }  # fmt: skip
    path = tmp_path / "drift_test.yml"
    path.write_text(yaml.safe_dump(test))
    done = subprocess.run([tool, "test", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
