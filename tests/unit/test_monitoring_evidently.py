"""Contract test of our Evidently adapter: what we rely on from Evidently 0.7, pinned.

If an Evidently upgrade breaks one of these, fix ``monitoring/evidently_adapter.py`` (the only
module that imports Evidently) until they pass again.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from financemath_mlops.monitoring.drift import DriftOutcome
from financemath_mlops.monitoring.evidently_adapter import drift_report, regression_report
from financemath_mlops.scoring import regression_metrics

N = 300


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "amount": rng.lognormal(3, 1, N),
            "words": rng.normal(60, 10, N),
            "sparse": np.where(rng.random(N) < 0.6, np.nan, rng.normal(size=N)),
            "flag": rng.integers(0, 2, N).astype(float),
        }
    )


@pytest.fixture(scope="module")
def shifted_report(reference: pd.DataFrame):
    current = reference.copy()
    current["amount"] = current["amount"] * 10  # obviously shifted
    current["words"] = np.random.default_rng(1).normal(60, 10, N)  # same distribution
    return drift_report(reference, current, ["amount", "words", "sparse"], ["flag"], 0.5, "ks")


def table_verdict(result, threshold: float) -> DriftOutcome:
    """The adapter's columns through the verdict the report uses (monitoring/drift.py)."""
    columns = [{"column": c.column, "detected": c.detected} for c in result.columns]
    return DriftOutcome({}, {}, columns, result.skipped, threshold, {})


def test_drift_is_detected_on_the_shifted_numeric_column_only(shifted_report):
    by_column = {c.column: c for c in shifted_report.columns}
    assert list(by_column) == ["amount", "words", "sparse", "flag"]
    assert by_column["amount"].detected and by_column["amount"].score < 1e-10
    assert by_column["amount"].method == "K-S p_value" and by_column["amount"].threshold == 0.05
    assert not any(by_column[c].detected for c in ("words", "sparse", "flag"))
    assert by_column["flag"].kind == "cat" and by_column["amount"].kind == "num"
    verdict = table_verdict(shifted_report, 0.5)
    assert verdict.drifted == 1 and verdict.share == 0.25
    assert not verdict.dataset_drift  # 25% < the 50% asked for


def test_identical_data_shows_no_drift(reference: pd.DataFrame):
    result = drift_report(reference, reference.copy(), ["amount", "words", "sparse"], ["flag"])
    verdict = table_verdict(result, 0.5)
    assert verdict.drifted == 0 and verdict.share == 0.0 and not verdict.dataset_drift
    assert all(c.score == pytest.approx(1.0) for c in result.columns)  # p-values


def test_distance_methods_detect_by_their_own_direction(reference: pd.DataFrame):
    current = reference.assign(amount=reference["amount"] * 10)
    result = drift_report(reference, current, ["amount", "words"], num_method="wasserstein")
    by_column = {c.column: c for c in result.columns}
    assert by_column["amount"].detected and by_column["amount"].score > 0.1
    assert not by_column["words"].detected and by_column["words"].score < 0.1


def test_a_column_without_values_is_skipped_not_an_error(reference: pd.DataFrame):
    current = reference.assign(sparse=np.nan)
    result = drift_report(reference, current, ["amount", "sparse"])
    assert [c.column for c in result.columns] == ["amount"]
    assert "current" in result.skipped["sparse"]


def test_the_report_saves_html_and_plain_json(shifted_report, tmp_path: Path):
    shifted_report.save_html(tmp_path / "drift.html")
    html = (tmp_path / "drift.html").read_text(encoding="utf-8")
    assert "<html" in html.lower() and len(html) > 10_000
    raw = shifted_report.raw()
    json.dumps(raw, allow_nan=False)  # plain, strict JSON
    assert {"metrics", "tests"} <= set(raw)


def test_regression_metrics_equal_our_own():
    rng = np.random.default_rng(3)
    truth = rng.lognormal(2, 1.5, 80)
    frame = pd.DataFrame({"target": truth, "prediction": truth * rng.normal(1, 0.2, 80)})
    result = regression_report(frame)
    ours = regression_metrics(frame["prediction"], frame["target"])
    assert result.metrics["mae"] == pytest.approx(ours["mae"], rel=1e-9)
    assert result.metrics["rmse"] == pytest.approx(ours["rmse"], rel=1e-9)
    errors = frame["prediction"] - frame["target"]
    assert result.metrics["mean_error"] == pytest.approx(errors.mean(), rel=1e-9)
    assert result.metrics["abs_max_error"] == pytest.approx(errors.abs().max(), rel=1e-9)
    assert 0 < result.metrics["r2"] <= 1
