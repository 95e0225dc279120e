"""Sign and scale: classify the answer's band (negative, fraction, 1-100, ...), then place it.

The regressor never predicts a negative or a value below 1 out of fold (those rows carry a third
of its log error). This model asks the band first (a LightGBM multiclass classifier) and then
answers within it: the regressor's estimate clipped into the band, or the band's training median
when the estimate lies outside. Kept only if the report's nested CV says it helps.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BANDS = (
    ("negative", -math.inf, 0.0),
    ("fraction", 0.0, 1.0),
    ("1-100", 1.0, 100.0),
    ("100-1e4", 100.0, 1e4),
    (">=1e4", 1e4, math.inf),
)
CLASSIFIER_PARAMS: dict[str, Any] = {
    "objective": "multiclass",
    "n_estimators": 100,
    "learning_rate": 0.05,
    "num_leaves": 4,
    "min_child_samples": 10,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "reg_lambda": 5.0,
}


def band_of(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    out = np.zeros(len(values), dtype=np.int64)
    for k, (_, low, high) in enumerate(BANDS):
        out[(values >= low) & (values < high)] = k
    return out


def fit_sign_scale(features: np.ndarray, target: np.ndarray, seed: int) -> dict[str, Any]:
    """The band classifier (a Booster) and each band's training median (NaN when empty)."""
    import lightgbm as lgb

    bands = band_of(target)
    model = lgb.LGBMClassifier(
        **{"random_state": seed, "verbose": -1, "n_jobs": 1, **CLASSIFIER_PARAMS}
    )
    model.fit(features, bands)
    medians = np.array(
        [float(np.median(target[bands == k])) if (bands == k).any() else math.nan
         for k in range(len(BANDS))]
    )  # fmt: skip
    return {"classifier": model, "medians": medians}


def predict_sign_scale(
    fitted: dict[str, Any], features: np.ndarray, estimates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Answers placed in the most likely band, and that band's probability."""
    model = fitted["classifier"]
    proba = model.predict_proba(features)
    classes = np.asarray(model.classes_)
    best = classes[np.argmax(proba, axis=1)]
    confidence = proba.max(axis=1)
    out = np.asarray(estimates, dtype=np.float64).copy()
    for i, band in enumerate(best):
        _, low, high = BANDS[int(band)]
        if not low <= out[i] < high:
            out[i] = fitted["medians"][int(band)]
    return out, confidence
