"""Readers (serving, `registry`) refuse a missing local MLflow store; the pipeline creates it."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from financemath_mlops import runs
from financemath_mlops.cli import run_main
from financemath_mlops.config import load_settings
from financemath_mlops.registry import main as registry_main
from financemath_mlops.serving.app import create_app


def settings_for(store: Path, **serving: object):
    return load_settings(
        overrides={"mlflow": {"tracking_uri": f"sqlite:///{store}"}, "serving": serving}
    )


def test_registry_refuses_a_missing_store_and_says_how_to_make_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "mlruns" / "mlflow.db"
    code = run_main(registry_main, ["--tracking-uri", f"sqlite:///{store}", "list"])
    assert code == 2
    assert "make run" in capsys.readouterr().err
    assert not store.exists()


def test_serving_refuses_to_start_on_a_missing_store(tmp_path: Path) -> None:
    store = tmp_path / "mlflow.db"
    app = create_app(settings_for(store, model_uri="models:/financemath-regressor@champion"))
    with pytest.raises(runs.TrackingError, match="make run"), TestClient(app):
        pass
    assert not store.exists()


def test_a_local_model_folder_needs_no_store(tmp_path: Path) -> None:
    runs.require_store(settings_for(tmp_path / "none.db"), str(tmp_path / "model"))


def test_the_pipeline_still_creates_a_missing_store(tmp_path: Path) -> None:
    store = tmp_path / "fresh" / "mlflow.db"
    runs.configure(settings_for(store))
    runs.client().search_registered_models()
    assert store.is_file()
