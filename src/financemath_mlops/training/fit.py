"""Fit the LightGBM regressor and cross-validate it (pure: arrays in, model and metrics out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from financemath_mlops.model.target import TargetTransform, forward, inverse
from financemath_mlops.scoring import median_baselines, regression_metrics
from financemath_mlops.training.split import kfold_indices, stratified_kfold_indices

CV_METRICS = ("mae", "rmse", "median_ae", "log_mae", "accuracy")


# Rebuilt bit for bit (`registry reproduce`): LightGBM's ``deterministic`` plus one fixed histogram
# layout. Left to itself LightGBM times row-wise against col-wise on the data and keeps the faster,
# so two runs on one machine can build their histograms differently. A user's own
# force_row_wise/force_col_wise wins. Cost measured on the sample (docs/deployment.md): within
# the noise on 1 thread (training.threads' default).
DETERMINISM = {"deterministic": True, "force_col_wise": True}
_LAYOUT = ("force_col_wise", "force_row_wise")


def regressor_params(
    params: dict[str, Any], seed: int, threads: int | None = None, verbose: int = -1
) -> dict[str, Any]:
    """What :func:`fit_booster` hands to ``LGBMRegressor``: the pipeline's seed, threads,
    verbosity and :data:`DETERMINISM`, then ``params`` (``training.lightgbm``). The parameter
    check builds the same."""
    fixed = {
        k: v for k, v in DETERMINISM.items() if not (k in _LAYOUT and set(_LAYOUT) & set(params))
    }
    return {"random_state": seed, "verbose": verbose, "n_jobs": threads or -1, **fixed, **params}


def fit_booster(
    features: np.ndarray,
    target: np.ndarray,
    params: dict[str, Any],
    transform: TargetTransform,
    seed: int,
    threads: int | None = None,
) -> Any:
    """Train on (features, target) and return the fitted LightGBM Booster."""
    return fit_exactly(features, target, regressor_params(params, seed, threads), transform)


def fit_exactly(
    features: np.ndarray, target: np.ndarray, booster_params: dict[str, Any], transform: str
) -> Any:
    """Train with exactly ``booster_params`` (what :func:`regressor_params` built for a run, as
    the run recorded it): a rebuild uses the run's, not today's defaults."""
    import lightgbm as lgb

    model = lgb.LGBMRegressor(**booster_params)
    model.fit(features, forward(target, transform))  # type: ignore[arg-type]
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
    topics: np.ndarray | None = None,
) -> dict[str, float]:
    """k-fold CV on the training rows: mean and sample std (ddof=1) of each metric across folds.

    With ``topics``, the folds are stratified by topic and the median baselines are scored on the
    same folds (``global_median_*``, ``topic_median_*``), so the model's spread can be read
    against theirs. The nested, repeated CV with intervals is the evaluation report's job.
    """
    per_fold: dict[str, list[float]] = {}
    splits = (
        kfold_indices(len(target), folds, seed)
        if topics is None
        else stratified_kfold_indices(list(topics), folds, seed)
    )
    for train_idx, valid_idx in splits:
        booster = fit_booster(
            features[train_idx], target[train_idx], params, transform, seed, threads
        )
        candidates = {"": predict_booster(booster, features[valid_idx], transform)}
        if topics is not None:
            baselines = median_baselines(target[train_idx], topics[train_idx], topics[valid_idx])
            candidates.update({f"{name}_": values for name, values in baselines.items()})
        for prefix, predictions in candidates.items():
            scores = regression_metrics(predictions, target[valid_idx])
            for name in CV_METRICS:
                per_fold.setdefault(prefix + name, []).append(scores[name])
    out: dict[str, float] = {"folds": float(len(per_fold["mae"]))}
    for name, values in per_fold.items():
        out[f"{name}_mean"] = float(np.mean(values))
        out[f"{name}_std"] = float(np.std(values, ddof=1))
    return out
