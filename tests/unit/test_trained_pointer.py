"""The training pointer names its tracking store: one spelling per store, no password, and a
pointer from before it did so is refused rather than followed into whichever store is configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from financemath_mlops import runs
from financemath_mlops.config import load_settings


def test_one_spelling_per_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    absolute = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert runs.store_identity("sqlite:///mlruns/mlflow.db") == absolute
    assert runs.store_identity("sqlite:///./mlruns/../mlruns/mlflow.db") == absolute
    assert runs.store_identity("file:./mlruns") == f"file://{tmp_path / 'mlruns'}"
    assert runs.store_identity("mlruns") == runs.store_identity(f"file://{tmp_path}/mlruns")
    assert runs.store_identity("HTTP://Tracker.Example:5000/") == "http://tracker.example:5000"
    secret = runs.store_identity("https://alice:s3cret@tracker.example/mlflow/")
    assert secret == "https://tracker.example/mlflow" and "s3cret" not in secret
    assert runs.store_identity("http://a:5000") != runs.store_identity("http://b:5000")


def test_a_pointer_that_names_no_store_is_refused(tmp_path: Path) -> None:
    features = tmp_path / "features.parquet"
    features.write_bytes(b"a table")
    pointer = {"run_id": "r", "model_uri": "models:/m/2", "model_name": "m", "version": "2",
               "features": str(features), "features_sha256": "x"}  # fmt: skip
    runs.trained_pointer_path(features).write_text(json.dumps(pointer))
    settings = load_settings(overrides={"training": {"features": str(features)}})
    with pytest.raises(runs.TrackingError, match="before pointers named their tracking store"):
        runs.challenger_uri(settings)


def test_features_beside_a_model_uri_is_refused_naming_both() -> None:
    settings = load_settings(overrides={"evaluation": {"model_uri": "models:/m/3"}})
    runs.refuse_ignored_features(None, settings, "evaluation")  # the model alone: fine
    runs.refuse_ignored_features(Path("t.parquet"), load_settings(), "evaluation")  # table alone
    with pytest.raises(runs.TrackingError, match=r"--features t\.parquet would be ignored") as err:
        runs.refuse_ignored_features(Path("t.parquet"), settings, "promotion")
    assert "models:/m/3" in str(err.value) and "Drop --features" in str(err.value)
