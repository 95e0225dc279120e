"""Monitoring as a gate: a drift or performance report on fewer rows than `monitoring.min_rows`
is refused (exit 2, naming the minimum), never a pass and never a traceback.

Six plainly drifted rows once said "no dataset drift" and exited 0 under `--fail-on-drift`; four
rows ended in a traceback. Feature tables here are the hand features only (no embedding model).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from financemath_mlops.cli import run_main
from financemath_mlops.features.rows import hand_features
from financemath_mlops.monitoring.__main__ import main
from financemath_mlops.monitoring.evidence import drift_verdict, row_shortfall
from financemath_mlops.records import RecordInput
from financemath_mlops.synthetic.sample import generate_sample

DRIFTED = {"topic_weights": {"Accounting": 1.0}, "value_scale": 10.0}


def feature_table(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A features-stage-like Parquet: the table/metadata columns (the report skips embeddings)."""
    pd.DataFrame([hand_features(RecordInput.from_mapping(r))[0] for r in rows]).to_parquet(path)
    return path


@pytest.fixture()
def reference(isolated_env: Path) -> Path:
    return feature_table(isolated_env / "reference.parquet", generate_sample(200, seed=1))


def drift(reference: Path, current: Path, *extra: str) -> list[str]:
    return ["drift", "--reference", str(reference), "--current", str(current), "--no-mlflow",
            "--output", str(reference.parent / "report"), *extra]  # fmt: skip


def test_fail_on_drift_refuses_six_drifted_rows_naming_the_minimum(reference: Path, capsys):
    current = feature_table(reference.parent / "six.parquet", generate_sample(6, 2, **DRIFTED))
    assert run_main(main, drift(reference, current, "--fail-on-drift")) == 2
    captured = capsys.readouterr()
    assert "only 6 current rows (< 30)" in captured.err and "monitoring.min_rows" in captured.err
    assert "--min-rows" in captured.err  # the flag that changes it
    assert "no dataset drift" not in captured.out
    assert not (reference.parent / "report").exists()
    assert not (reference.parent / "reports").exists()  # nothing published, nothing indexed


def test_four_rows_are_refused_without_a_traceback_even_with_the_minimum_lowered(
    reference: Path, capsys
):
    current = feature_table(reference.parent / "four.parquet", generate_sample(4, 2, **DRIFTED))
    assert run_main(main, drift(reference, current)) == 2
    assert "only 4 current rows (< 30)" in capsys.readouterr().err
    assert run_main(main, drift(reference, current, "--min-rows", "1")) == 2
    assert "no feature column has 5 values on both sides" in capsys.readouterr().err
    assert not (reference.parent / "report").exists()


def test_a_small_reference_is_no_evidence_either(reference: Path, capsys):
    small = feature_table(reference.parent / "small.parquet", generate_sample(10, seed=3))
    assert run_main(main, drift(small, reference)) == 2
    assert "only 10 reference rows (< 30)" in capsys.readouterr().err


def test_the_flow_verdict_and_the_command_count_rows_the_same_way():
    assert row_shortfall({"reference": 240, "current": 30}, 30) is None
    assert row_shortfall({"reference": 240, "current": 6}, 30) == "only 6 current rows (< 30)"
    both = row_shortfall({"reference": 8, "current": 6}, 30)
    assert both == "only 8 reference rows and 6 current rows (< 30)"
    numbers = {"share": 0.9, "drift_share_threshold": 0.3, "dataset_drift": True}
    verdict = drift_verdict({**numbers, "current_rows": 6}, 30)
    assert not verdict.retrain and verdict.reason == "only 6 current rows (< 30)"
