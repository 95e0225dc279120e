"""Log the raw-record pyfunc to MLflow: booster + ONNX embedding bundle + model config."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

from financemath_mlops.model.predictor import BOOSTER_FILE, CONFIG_FILE

# What the pyfunc needs at load time, pinned to what trained it: no lightgbm (model/trees.py
# evaluates booster.txt with numpy) and no pyarrow (issue 18).
SERVING_REQUIREMENTS = (
    "mlflow", "onnxruntime", "tokenizers", "numpy", "pandas", "pydantic",
)  # fmt: skip


def pip_requirements() -> list[str]:
    pins = []
    for dist in SERVING_REQUIREMENTS:
        try:
            pins.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(dist)
    return pins


def signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(DataType.string, "question"),
                ColSpec(Array(DataType.string), "tables", required=False),
                ColSpec(DataType.string, "topic", required=False),
            ]
        ),
        outputs=Schema([ColSpec(DataType.double, "prediction")]),
    )


def input_example(records: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame(
        [
            {"question": r["question"], "tables": list(r.get("tables") or []), "topic": r["topic"]}
            for r in records
        ]
    )


def model_config(
    manifest: dict[str, Any], target_transform: str, bundle: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``bundle``: the logged ONNX bundle's config; its precision must be the features' own."""
    config = {
        "feature_version": manifest["feature_version"],
        "feature_columns": manifest["columns"],
        "target_transform": target_transform,
        "embedding": manifest["embedding"],
        "served_embedding_backend": "onnx",
        "data": manifest.get("data", {}),
    }
    if bundle is not None:
        config["embedding_bundle"] = {
            k: bundle.get(k)
            for k in ("model_id", "precision", "max_length", "weights_sha256", "quantization")
        }
    return config


def write_model_files(
    booster: Any,
    manifest: dict[str, Any],
    target_transform: str,
    bundle: Path,
    work_dir: Path,
) -> tuple[Path, Path, dict[str, Any]]:
    """Write the booster and the model config that the pyfunc carries beside ``bundle``; returns
    their paths and the bundle's config. Training's servable check loads exactly these files
    (``training/servable.py``) before :func:`log_pyfunc` logs the same ones."""
    from financemath_mlops.features.onnx_export import read_bundle_config

    work_dir.mkdir(parents=True, exist_ok=True)
    booster_path = work_dir / BOOSTER_FILE
    booster.save_model(str(booster_path))
    bundle_config = read_bundle_config(bundle)
    config_path = work_dir / CONFIG_FILE
    config = model_config(manifest, target_transform, bundle_config)
    config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return booster_path, config_path, bundle_config


def log_pyfunc(
    *,
    booster: Any,
    manifest: dict[str, Any],
    target_transform: str,
    bundle: Path,
    work_dir: Path,
    example: list[dict[str, Any]],
    name: str = "model",
) -> Any:
    """Log the model in the active run as `name`; returns MLflow's ModelInfo. Registering it is
    the caller's (:func:`financemath_mlops.runs.training_run.log_training_run`, tagged).

    ``bundle``: the ONNX embedding bundle the features were embedded with, logged as given:
    packaging never resolves weights (no hub probe while a run is open).
    ``example``: raw records for MLflow's input example (none when empty).
    """
    import mlflow
    import mlflow.pyfunc

    booster_path, config_path, bundle_config = write_model_files(
        booster, manifest, target_transform, bundle, work_dir
    )
    mlflow.set_tag("embedding_precision", bundle_config["precision"])
    return mlflow.pyfunc.log_model(
        name=name,
        # Models from code: MLflow stores this small file instead of a pickle.
        python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
        artifacts={
            "booster": str(booster_path),
            "embedding": str(bundle),
            "model_config": str(config_path),
        },
        signature=signature(),
        input_example=input_example(example) if example else None,
        pip_requirements=pip_requirements(),
    )
