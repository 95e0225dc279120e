"""Servable or not registered: the trained booster, loaded as serving loads it, must score alike.

Serving never runs lightgbm: it reads the logged ``booster.txt`` with ``model/trees.py`` through
:meth:`Predictor.from_files <financemath_mlops.model.predictor.Predictor.from_files>` (what the
model-folder loader and the pyfunc's ``load_context`` both call). :func:`check_servable` writes the
model files as ``model/packaging.py`` logs them (the booster's text, the model config), loads them
through that path with the ONNX bundle that is logged beside them, and compares the served raw
scores and values with the trained booster's on every training row (rtol 1e-6, atol 1e-12, the
tree-parity tests' tolerance). Training calls it after the final fit and before the MLflow run
is opened: a refused model leaves no run, no model version and no alias move.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops.errors import StageError

RTOL, ATOL = 1e-6, 1e-12  # tests/model/test_trees_parity.py
NOTHING_LOGGED = (
    "Nothing was logged or registered: the check runs before the MLflow run is opened "
    "(no run, no model version, no alias moved)."
)


@dataclass(frozen=True)
class ServableCheck:
    rows: int
    max_abs_diff: float
    seconds: float


def score_mismatch(served: np.ndarray, trained: np.ndarray, what: str = "raw scores") -> str | None:
    """Where ``served`` differs from ``trained`` beyond RTOL/ATOL, in words; None when alike."""
    served, trained = np.asarray(served, dtype=np.float64), np.asarray(trained, dtype=np.float64)
    if served.shape != trained.shape:
        return f"{what}: served shape {served.shape}, trained {trained.shape}"
    close = np.isclose(served, trained, rtol=RTOL, atol=ATOL, equal_nan=True)
    if close.all():
        return None
    bad = np.flatnonzero(~close.reshape(len(close), -1).all(axis=1))
    diff = np.abs(np.nan_to_num(served - trained, nan=np.inf))
    worst = int(np.unravel_index(np.argmax(diff), diff.shape)[0])
    return (
        f"{what} differ on {len(bad)} of {len(served)} training rows beyond rtol {RTOL:g} / atol "
        f"{ATOL:g} (worst row {worst}: served {served[worst]!r}, trained {trained[worst]!r})"
    )


def check_servable(
    booster: Any,
    features: np.ndarray,
    manifest: dict[str, Any],
    target_transform: str,
    bundle: Path,
) -> ServableCheck:
    """Refuse (StageError) a booster the serving path cannot load, or that it scores otherwise.

    ``features``: the training matrix; ``manifest``: the feature table's; ``bundle``: the ONNX
    embedding bundle that will be logged with the model.
    """
    from financemath_mlops.features.onnx_export import BundleError
    from financemath_mlops.model.packaging import write_model_files
    from financemath_mlops.model.predictor import Predictor
    from financemath_mlops.model.target import inverse
    from financemath_mlops.model.trees import TreeModelError

    started = time.perf_counter()
    x = np.asarray(features, dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="fmops-servable-") as tmp:
        try:
            booster_path, config_path, _ = write_model_files(  # the files log_pyfunc logs
                booster, manifest, target_transform, bundle, Path(tmp)
            )
            predictor = Predictor.from_files(booster_path, bundle, config_path, threads=1)
        except TreeModelError as exc:
            raise StageError(
                f"the trained model cannot be served: model/trees.py refuses it ({exc}); "
                f"change training.lightgbm (FMOPS_TRAINING__LIGHTGBM) so that it trains plain "
                f"numerical trees with a regression objective. {NOTHING_LOGGED}"
            ) from None
        except (BundleError, ValueError) as exc:  # the bundle, or columns serving does not build
            raise StageError(
                f"the trained model cannot be served: {exc}. {NOTHING_LOGGED}"
            ) from None
    raw_trained = np.asarray(booster.predict(x, raw_score=True, num_threads=1), dtype=np.float64)
    raw_served = np.asarray(predictor.booster.predict(x, raw_score=True), dtype=np.float64)
    values_trained = inverse(np.asarray(booster.predict(x, num_threads=1)), target_transform)
    mismatch = score_mismatch(raw_served, raw_trained) or score_mismatch(
        predictor.predict_features(x), values_trained, "predicted values"
    )
    if mismatch:
        raise StageError(
            f"the trained model is not served as trained: {mismatch}. model/trees.py (the served "
            f"evaluator) does not reproduce this LightGBM model; change training.lightgbm "
            f"(FMOPS_TRAINING__LIGHTGBM) or fix model/trees.py. {NOTHING_LOGGED}"
        )
    return ServableCheck(
        rows=len(x),
        max_abs_diff=float(np.max(np.abs(raw_served - raw_trained), initial=0.0)),
        seconds=time.perf_counter() - started,
    )
