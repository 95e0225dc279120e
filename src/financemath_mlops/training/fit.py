"""Fit the LightGBM regressor and cross-validate it (pure: arrays in, model and metrics out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from financemath_mlops.evaluation.metrics import regression_metrics
from financemath_mlops.model.target import TargetTransform, forward, inverse
from financemath_mlops.training.split import kfold_indices

CV_METRICS = ("mae", "rmse", "median_ae", "log_mae", "accuracy")


def fit_booster(
    features: np.ndarray,
    target: np.ndarray,
    params: dict[str, Any],
    transform: TargetTransform,
    seed: int,
    threads: int | None = None,
) -> Any:
    """Train on (features, target) and return the fitted LightGBM Booster."""  # fmt: skip
    import lightgbm as lgb

    model = lgb.LGBMRegressor(
        **{"random_state": seed, "verbose": -1, "n_jobs": threads or -1, **params}
    )
    model.fit(features, forward(target, transform))
    return model.booster_


def predict_booster(booster: Any, features: np.ndarray, transform: TargetTransform) -> np.ndarray:
    return inverse(booster.predict(features), transform)


def cross_validate(
    features: np.ndarray,
    target: np.ndarray,
    params: dict[str, Any],
    transform: TargetTransform,
    folds: int,
    seed: int,
    threads: int | None = None,
) -> dict[str, float]:
    """k-fold CV on the training rows: mean and std of each metric across folds."""  # fmt: skip
    per_fold: dict[str, list[float]] = {name: [] for name in CV_METRICS}
    for train_idx, valid_idx in kfold_indices(len(target), folds, seed):
        booster = fit_booster(
            features[train_idx], target[train_idx], params, transform, seed, threads
        )
        scores = regression_metrics(
            predict_booster(booster, features[valid_idx], transform), target[valid_idx]
        )
        for name in CV_METRICS:
            per_fold[name].append(scores[name])
    out: dict[str, float] = {"folds": float(len(per_fold["mae"]))}
    for name, values in per_fold.items():
        out[f"{name}_mean"] = float(np.mean(values))
        out[f"{name}_std"] = float(np.std(values))
    return out
