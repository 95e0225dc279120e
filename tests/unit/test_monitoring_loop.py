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
