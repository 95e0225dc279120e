"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from financemath_mlops.config import Settings, load_settings
from tests.helpers import REPO_ROOT, SHARED_DATA, cli_env, seeded_store


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real FinanceMath files beside the checkout; tests using them skip when absent."""
    if not (SHARED_DATA / "validation.json").is_file():
        pytest.skip(f"real FinanceMath files not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run in a temp working dir with no FMOPS_/MLflow/HF variables leaking in from the shell."""
    for name in list(os.environ):
        if name.startswith(("FMOPS_", "MLFLOW_")) or name in ("HF_TOKEN",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def restore_mlflow_uris() -> Iterator[None]:
    """Training sets MLflow's process-wide URIs: put them back for the tests that follow."""
    import mlflow

    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(registry)


@dataclass
class TrainedModel:
    """A model trained by the real stage functions on the synthetic sample, in a temp store."""

    tracking_uri: str
    workdir: Path
    model_name: str
    version: str
    run_id: str
    features_path: Path
    ingested_path: Path
    settings: Settings
    env: dict[str, str]
    metrics_path: Path


def pipeline_settings(workdir: Path, rows: int = 300, seed: int = 11, **extra: Any) -> Settings:
    """Settings with every path absolute under workdir (embedding caches shared per repo)."""
    overrides: dict[str, Any] = {
        "paths": {
            "raw_dir": workdir / "data" / "raw",
            "interim_dir": workdir / "data" / "interim",
            "processed_dir": workdir / "data" / "processed",
            "predictions_dir": workdir / "data" / "predictions",
            "reports_dir": workdir / "reports",
            # ONNX export and embeddings are content-keyed caches: sharing them is safe.
            "cache_dir": REPO_ROOT / ".cache",
            "hf_cache_dir": REPO_ROOT / ".cache" / "hf",
        },
        "ingestion": {"source": "sample", "rows": rows, "seed": seed},
        "mlflow": {
            "tracking_uri": f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}",
            "artifact_root": str(workdir / "mlruns" / "artifacts"),
        },
        "training": {"cv_folds": 3},
    }
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    return load_settings(REPO_ROOT / "configs" / "default.yaml", overrides)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """Ingest -> features -> train -> evaluate (promotes the first model to champion)."""
    from financemath_mlops.flows import stages

    workdir = tmp_path_factory.mktemp("trained")
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("FMOPS_", "MLFLOW_"))}
    try:
        settings = pipeline_settings(workdir)
        seeded_store(workdir / "mlruns" / "mlflow.db")  # MLflow's empty tables, copied
        stages.ingest_stage(settings)
        stages.features_stage(settings)
        summary = stages.train_stage(settings)
        stages.evaluate_stage(settings, summary.model_uri)
        stages.promote_stage(settings, summary.model_uri)
    finally:
        os.environ.update(saved)
    env = cli_env(
        FMOPS_MLFLOW__TRACKING_URI=settings.mlflow.tracking_uri,
        FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return TrainedModel(
        tracking_uri=settings.mlflow.tracking_uri,
        workdir=workdir,
        model_name=summary.model_name,
        version=summary.version,
        run_id=summary.run_id,
        features_path=settings.features_output,
        ingested_path=settings.ingestion_output,
        settings=settings,
        env=env,
        metrics_path=settings.metrics_output,
    )
