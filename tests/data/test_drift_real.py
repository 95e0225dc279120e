"""`monitoring drift` on the real FinanceMath splits: the test split against the validation split.

Both splits come from the same benchmark, so the report must run end to end on real questions and
tables (featurised on the fly, embeddings cached under the repo's .cache) and find no dataset
drift. The data lives outside the repository (``../shared/data/financemath``); without it this
module skips. docs/monitoring.md shows what the report found.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "financemath"
REPO_ROOT = Path(__file__).resolve().parents[2]

if not (DATA_DIR / "validation.json").is_file() or not (DATA_DIR / "test.json").is_file():
    pytest.skip(f"FinanceMath data not found at {DATA_DIR}", allow_module_level=True)


def test_drift_of_the_test_split_against_validation_writes_both_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    from financemath_mlops.monitoring.__main__ import main

    monkeypatch.setenv("FMOPS_CONFIG", str(REPO_ROOT / "configs" / "default.yaml"))
    monkeypatch.setenv("FMOPS_PATHS__CACHE_DIR", str(REPO_ROOT / ".cache"))
    monkeypatch.setenv("FMOPS_PATHS__HF_CACHE_DIR", str(REPO_ROOT / ".cache" / "hf"))
    monkeypatch.setenv("FMOPS_PATHS__REPORTS_DIR", str(tmp_path / "reports"))
    output = tmp_path / "reports" / "test-vs-validation"
    code = main(
        ["drift", "--reference", str(DATA_DIR / "validation.json"),
         "--current", str(DATA_DIR / "test.json"), "--output", str(output),
         "--no-mlflow", "--fail-on-drift"]
    )  # fmt: skip
    console = capsys.readouterr().out
    assert code == 0, console
    assert (output / "drift.html").stat().st_size > 10_000
    report = json.loads((output / "drift.json").read_text())
    assert report["reference"]["rows"] == 200 and report["current"]["rows"] == 1000
    summary = report["summary"]
    assert summary["columns"] == 28 + 5 and not summary["dataset_drift"]
    assert summary["share"] < summary["drift_share_threshold"]
    assert report["embedding"]["status"] == "ok"
    assert "no dataset drift" in console
    latest = json.loads((tmp_path / "reports" / "latest.json").read_text())
    assert latest["drift"]["share"] == summary["share"]
