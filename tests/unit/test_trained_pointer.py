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


def test_spellings_that_name_no_local_path_are_kept(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runs.store_identity("databricks") == "databricks"  # not file://<cwd>/databricks
    assert runs.store_identity("databricks-uc") == "databricks-uc"
    assert runs.store_identity("file://server/share/mlruns") == "file://server/share/mlruns"
    assert runs.store_identity("file://localhost/srv/mlruns") == "file:///srv/mlruns"
    assert runs.store_identity("http://[::1]:5000/") == "http://[::1]:5000"
    assert runs.store_identity("http://tracker:80") == runs.store_identity("http://tracker")
    assert runs.store_identity("https://tracker:443/") == "https://tracker"
    assert runs.store_identity("postgresql+psycopg2://u:pw@db/mlflow") == runs.store_identity(
        "postgresql://db/mlflow"
    )


RUN_ID = "5f0c8a3e2b1d4c6f9e8a7b6c5d4e3f21"


def pointed_table(tmp_path: Path, store: str) -> Path:
    from financemath_mlops.atomic import file_sha256

    features = tmp_path / "features.parquet"
    features.write_bytes(b"a table")
    runs.write_trained_pointer(
        features,
        runs.TrainedPointer(
            RUN_ID,
            "models:/m/2",
            "m",
            "2",
            str(features),
            file_sha256(features),
            runs.store_identity(store),
        ),  # fmt: skip
    )
    return features


@pytest.mark.parametrize(
    ("trained_in", "judged_in"),
    [
        ("http://localhost:5000", "http://127.0.0.1:5000"),
        ("http://mlflow:5000", "http://192.168.1.20:5000"),  # compose's name vs the host's address
        ("http://[::1]:5000", "http://localhost:5000"),
    ],
)
def test_one_store_under_two_addresses_is_recognised_by_the_run_id(
    tmp_path: Path, monkeypatch, caplog, trained_in: str, judged_in: str
) -> None:
    from financemath_mlops.runs import pointer as pointer_module

    features = pointed_table(tmp_path, trained_in)
    asked = []
    monkeypatch.setattr(
        pointer_module, "resolve",
        lambda uri: asked.append(uri) or runs.ModelRef(uri, "m", "2", None, RUN_ID),
    )  # fmt: skip
    with caplog.at_level("INFO", logger=pointer_module.__name__):
        assert runs.model_trained_on(features, judged_in).model_uri == "models:/m/2"
    assert asked == ["models:/m/2"]
    assert f"recognised by its run id {RUN_ID}" in caplog.text


def test_another_store_is_refused_naming_both(tmp_path: Path, monkeypatch) -> None:
    from financemath_mlops.runs import pointer as pointer_module

    features = pointed_table(tmp_path, "http://localhost:5000")
    other_run = runs.ModelRef("models:/m/2", "m", "2", None, "0" * 32)
    monkeypatch.setattr(pointer_module, "resolve", lambda uri: other_run)
    with pytest.raises(runs.TrackingError) as err:
        runs.model_trained_on(features, "http://tracker.example:5000")
    message = str(err.value)
    assert "http://localhost:5000" in message and "http://tracker.example:5000" in message
    assert f"there models:/m/2 is run {'0' * 32}" in message and "--tracking-uri" in message

    def missing(uri: str) -> runs.ModelRef:
        raise runs.TrackingError(f"cannot resolve model {uri}: not found")

    monkeypatch.setattr(pointer_module, "resolve", missing)
    with pytest.raises(runs.TrackingError, match="it has no such model"):
        runs.model_trained_on(features, "http://tracker.example:5000")
