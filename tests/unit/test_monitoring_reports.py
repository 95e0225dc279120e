"""Pure parts of the reports: embedding drift, time windows, published numbers and their gauges."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from financemath_mlops.monitoring.drift import DriftOutcome, is_flag, numerical_method
from financemath_mlops.monitoring.embedding_drift import fit_projection, mean_embedding_test
from financemath_mlops.monitoring.inputs import MonitoringError, parse_time
from financemath_mlops.monitoring.prometheus import ReportMetricsCollector
from financemath_mlops.monitoring.publish import (
    REPORT_GAUGES,
    latest_report_metrics,
    publish_latest,
)


def unit_rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray:
    x = rng.normal(size=(n, 384)) + 0.5  # a shared direction, as real embeddings have
    x[:, :8] *= 4  # and a few dominant axes
    x[:, 0] += shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_principal_components_come_from_the_reference_only():
    rng = np.random.default_rng(0)
    reference = unit_rows(rng, 300)
    projection = fit_projection(reference, components=5)
    assert projection.axes.shape == (5, 384) and projection.names[0] == "emb_pc1"
    ratios = projection.explained_variance_ratio
    assert np.all(np.diff(ratios) <= 1e-12) and 0 < ratios.sum() < 1
    np.testing.assert_allclose(projection.project(reference).mean(axis=0), 0, atol=1e-12)
    assert fit_projection(reference[:3], components=5).axes.shape == (2, 384)  # <= rows - 1


def test_the_mean_embedding_test_separates_a_shift_from_a_resample():
    rng = np.random.default_rng(1)
    reference = unit_rows(rng, 300)
    same_distance, same_p = mean_embedding_test(reference, unit_rows(rng, 200))
    shifted_distance, shifted_p = mean_embedding_test(reference, unit_rows(rng, 200, shift=3))
    assert same_p > 0.05 and shifted_p < 0.01
    assert shifted_distance > 2 * same_distance
    gaps = np.vstack([unit_rows(rng, 50), np.full((5, 384), np.nan)])
    assert np.isfinite(mean_embedding_test(reference, gaps)[0])  # rows with gaps are ignored


def test_numerical_tests_follow_the_reference_size_and_flags_are_categories():
    assert numerical_method(200) == "ks" and numerical_method(1000) == "ks"
    assert numerical_method(1001) == "wasserstein"
    assert is_flag("q_has_percent") and is_flag("topic_accounting") and not is_flag("tbl_count")


def test_times_are_iso_or_a_duration_before_now():
    now = datetime(2025, 1, 31, 12, tzinfo=UTC)
    assert parse_time("24h", now) == now - timedelta(hours=24)
    assert parse_time("90m", now) == now - timedelta(minutes=90)
    assert parse_time("7d", now) == now - timedelta(days=7)
    assert parse_time("2025-01-30T08:00:00Z") == datetime(2025, 1, 30, 8, tzinfo=UTC)
    assert parse_time("2025-01-30T08:00:00") == datetime(2025, 1, 30, 8, tzinfo=UTC)
    assert parse_time(None) is None
    with pytest.raises(MonitoringError, match="ISO-8601"):
        parse_time("yesterday")


def outcome(detected: list[bool]) -> DriftOutcome:
    columns = [
        {
            "column": f"c{i}",
            "group": "table",
            "kind": "num",
            "method": "K-S p_value",
            "score": 0.001 * (i + 1) if hit else 0.5,
            "threshold": 0.05,
            "detected": hit,
        }
        for i, hit in enumerate(detected)
    ]
    return DriftOutcome(
        reference={"source": "ref.parquet", "rows": 100},
        current={"source": "data/predictions", "rows": 50},
        columns=columns,
        skipped={},
        drift_share_threshold=0.3,
        embedding={"status": "skipped", "reason": "no embedding columns in the current data"},
    )


def test_the_summary_counts_drift_and_ranks_the_strongest_first():
    report = outcome([False, True, True, False, False, False, False, False, False, False])
    assert report.drifted == 2 and report.share == 0.2 and not report.dataset_drift
    assert [c["column"] for c in report.top(3)] == ["c1", "c2", "c0"]
    assert outcome([True, True, True] + [False] * 7).dataset_drift  # 30% reaches 0.3
    text = report.console(top=3)
    assert "2 of 10 (20.0%)" in text and "no dataset drift" in text and "not tested" in text
    json.dumps(report.to_json(), allow_nan=False)


def test_published_numbers_become_gauges_at_scrape_time(tmp_path: Path):
    registry = CollectorRegistry()
    registry.register(ReportMetricsCollector(tmp_path))
    assert b"fmops_drift_share" not in generate_latest(registry)  # no report yet: no series
    assert latest_report_metrics(tmp_path) == {}

    publish_latest(tmp_path, "drift", {"share": 0.4, "drifted": 12, "columns": 30,
                                       "dataset_drift": True, "drift_share_threshold": 0.3,
                                       "mean_cosine_distance": float("nan")})  # fmt: skip
    publish_latest(tmp_path, "performance", {"mae": 12.5, "rows": 40, "training_mae": 10.0})
    assert registry.get_sample_value("fmops_drift_share") == 0.4
    assert registry.get_sample_value("fmops_drift_detected") == 1.0
    assert registry.get_sample_value("fmops_performance_mae") == 12.5
    assert registry.get_sample_value("fmops_drift_embedding_cosine_distance") is None  # NaN

    publish_latest(tmp_path, "drift", {"share": 0.1, "dataset_drift": False})  # a newer report
    values = latest_report_metrics(tmp_path)
    assert values["fmops_drift_share"] == 0.1 and values["fmops_drift_detected"] == 0.0
    assert values["fmops_performance_mae"] == 12.5  # the other kind is kept
    assert "fmops_drift_columns_tested" not in values
    assert set(values) <= set(REPORT_GAUGES)


def test_a_damaged_latest_file_shows_no_values_instead_of_failing(tmp_path: Path):
    (tmp_path / "latest.json").write_text("{not json")
    assert latest_report_metrics(tmp_path) == {}


def test_the_cli_refuses_a_drift_share_outside_0_1(capsys):
    from financemath_mlops.cli import run_main
    from financemath_mlops.monitoring.__main__ import main

    assert run_main(main, ["drift", "--drift-share", "2", "--no-mlflow"]) == 2
    assert "--drift-share must be in (0, 1]" in capsys.readouterr().err


def test_what_the_service_imports_from_monitoring_pulls_in_nothing_heavy():
    code = (
        "import sys\n"
        "import financemath_mlops.monitoring.prometheus, financemath_mlops.monitoring.prediction_log\n"
        "import financemath_mlops.config\n"
        "heavy = ('evidently', 'torch', 'sentence_transformers', 'prefect', 'mlflow')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
