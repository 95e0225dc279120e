"""Predict from raw records: parse tables, embed the question, build the row, run the booster.

Uses the one feature function (:func:`financemath_mlops.features.rows.feature_matrix`) and the ONNX
embedding bundle that travels with the model, so served features equal training features.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from financemath_mlops.features.rows import FEATURE_COLUMNS, FEATURE_VERSION, feature_matrix
from financemath_mlops.model.target import inverse
from financemath_mlops.records import RecordInput

if TYPE_CHECKING:
    from financemath_mlops.features.embeddings import Spinning

log = logging.getLogger(__name__)

BOOSTER_FILE = "booster.txt"
CONFIG_FILE = "model_config.json"


@dataclass
class Prediction:
    values: np.ndarray
    warnings: list[list[str]]
    embed_seconds: float = 0.0
    inference_seconds: float = 0.0
    features: np.ndarray | None = field(default=None, repr=False)


class Predictor:
    """Booster + embedder + config. Thread-safe for concurrent `predict` calls."""

    def __init__(self, booster: Any, embedder: Any, config: dict[str, Any]) -> None:
        if list(config["feature_columns"]) != list(FEATURE_COLUMNS):
            raise ValueError(
                "model was trained on other feature columns than this code builds "
                f"(model feature_version {config.get('feature_version')}); retrain or pin the code"
            )
        if str(config.get("feature_version")) != str(FEATURE_VERSION):
            # Same columns, other meaning (version 2: topics matched in any case): served, the
            # model would read values it was not trained on.
            raise ValueError(
                f"model was trained on feature version {config.get('feature_version')}, this "
                f"code builds version {FEATURE_VERSION} (same columns, other values: "
                "docs/features.md); retrain it, or serve it with the code that trained it"
            )
        mismatch = bundle_mismatch(config.get("embedding") or {}, embedder)
        if mismatch:
            raise ValueError(
                "the embedding bundle differs from the one the model was trained with ("
                + "; ".join(mismatch)
                + "); serve the model with the bundle logged beside it"
            )
        self.booster = booster
        self.embedder = embedder
        self.config = config
        self.transform = config["target_transform"]

    @classmethod
    def from_files(
        cls,
        booster_path: Path,
        bundle_dir: Path,
        config_path: Path,
        threads: int | None = None,
        spinning: Spinning = "always",
    ) -> Predictor:
        from financemath_mlops.features.embeddings import OnnxEmbedder
        from financemath_mlops.model.trees import TreeEnsemble

        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        booster = TreeEnsemble.from_file(booster_path)  # numpy: no lightgbm/scipy at serving
        embedder = OnnxEmbedder(Path(bundle_dir), threads=threads, spinning=spinning)
        return cls(booster, embedder, config)

    def features(self, records: Sequence[RecordInput]) -> tuple[np.ndarray, list[list[str]], float]:
        started = time.perf_counter()
        vectors = self.embedder.embed([r.question for r in records])
        embed_seconds = time.perf_counter() - started
        warnings: list[list[str]] = []
        return feature_matrix(records, vectors, warnings), warnings, embed_seconds

    def predict_features(self, matrix: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(matrix, num_threads=1)
        return inverse(np.asarray(raw, dtype=np.float64), self.transform)

    def predict(self, records: Sequence[RecordInput], keep_features: bool = False) -> Prediction:
        matrix, warnings, embed_seconds = self.features(records)
        started = time.perf_counter()
        values = self.predict_features(matrix)
        return Prediction(
            values=values,
            warnings=warnings,
            embed_seconds=embed_seconds,
            inference_seconds=time.perf_counter() - started,
            features=matrix if keep_features else None,
        )


def bundle_mismatch(trained: dict[str, Any], embedder: Any) -> list[str]:
    """How ``embedder``'s bundle differs from the embedding the features were built with.

    Precision above all: int8 vectors are not fp32 vectors (a model trained on one must not be
    served the other). Manifests from before precisions existed mean fp32.
    """
    bundle = getattr(embedder, "config", None)
    served = {"precision": getattr(embedder, "precision", "fp32")}
    if isinstance(bundle, dict):
        served |= {k: bundle.get(k) for k in ("model_id", "max_length", "weights_sha256")}
    expected = {"precision": trained.get("precision", "fp32")}
    expected |= {
        k: trained[k] for k in ("model_id", "max_length", "weights_sha256") if k in trained
    }
    return [
        f"{key}: trained {expected[key]!r}, bundle {served.get(key)!r}"
        for key in expected
        if key in served and str(served[key]) != str(expected[key])
    ]


def with_threads(predictor: Any, threads: int, spinning: Spinning = "never") -> Any:
    """The same model with its ONNX session limited to ``threads`` (serving.inference_threads).

    The logged pyfunc builds its embedder with onnxruntime's default thread count and spinning;
    rebuild the embedder from the same bundle with ``spinning`` (a server shares its cores, so
    idle threads sleep unless told otherwise: see OnnxEmbedder). A non-ONNX embedder is kept.
    """
    from financemath_mlops.features.embeddings import OnnxEmbedder

    embedder = predictor.embedder
    if not isinstance(embedder, OnnxEmbedder):
        log.warning("inference_threads applies to the ONNX embedder only; keeping the default")
        return predictor
    if embedder.threads == threads and embedder.spinning == spinning:
        return predictor
    rebuilt = OnnxEmbedder(embedder.bundle_dir, embedder.batch_size, threads, spinning=spinning)
    return Predictor(predictor.booster, rebuilt, predictor.config)
