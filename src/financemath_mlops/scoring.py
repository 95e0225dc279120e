"""How a prediction is scored: FinanceMath's tolerance rule, regression metrics and the median
baselines (pure functions over arrays).

One floor below the stages: training scores its CV folds with it and evaluation its holdout,
so neither stage imports the other for a metric.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from financemath_mlops.model.target import signed_log1p

REL_TOL = 0.0015  # FinanceMath: within 0.15 % of the ground truth's magnitude


def _within_eps(pred: float, truth: float) -> bool:
    eps = abs(truth) * REL_TOL
    return truth - eps <= pred <= truth + eps


def _ceil3(value: float) -> float:
    return math.ceil(value * 1000) / 1000


def financemath_correct(prediction: Any, truth: float) -> bool:
    """The benchmark's rule for one answer (magnitude rules ignore the sign, as the original does).

    Correct when: within 0.15 % of the truth; or magnitudes equal after rounding up to 3 decimals;
    or magnitudes differ by an exact power of ten; or the smaller one x100 / x1,000 / x100,000 lands
    within 0.15 % of the larger, with the smaller at most 1/50, 1/500, 1/50,000 of it. Non-numeric
    predictions are wrong.
    """
    try:
        pred = float(prediction)
    except (TypeError, ValueError):
        return False
    if not math.isfinite(pred) or not math.isfinite(truth):
        return False
    large, small = max(abs(truth), abs(pred)), min(abs(truth), abs(pred))
    if large != 0 and small != 0:
        ratio = math.log10(large / small)
        if int(ratio) == ratio:
            return True
        if small <= large / 50 and _within_eps(small * 100, large):
            return True
        if small <= large / 500 and _within_eps(small * 1000, large):
            return True
        if small <= large / 50000 and _within_eps(small * 100000, large):
            return True
    if _ceil3(large) == _ceil3(small):
        return True
    return _within_eps(pred, truth)


def tolerance_accuracy(predictions: Sequence[float], truths: Sequence[float]) -> float:
    if len(truths) == 0:
        return math.nan
    hits = sum(financemath_correct(p, t) for p, t in zip(predictions, truths, strict=True))
    return hits / len(truths)


def regression_metrics(predictions: Sequence[float], truths: Sequence[float]) -> dict[str, float]:
    """n, MAE, RMSE, median absolute error, MAE on the signed-log1p scale, tolerance accuracy."""
    pred = np.asarray(predictions, dtype=np.float64)
    true = np.asarray(truths, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"{pred.shape} predictions for {true.shape} truths")
    if true.size == 0:
        nan = math.nan
        return {"n": 0, "mae": nan, "rmse": nan, "median_ae": nan, "log_mae": nan, "accuracy": nan}
    errors = np.abs(pred - true)
    return {
        "n": int(true.size),
        "mae": float(errors.mean()),
        "rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "median_ae": float(np.median(errors)),
        "log_mae": float(np.mean(np.abs(signed_log1p(pred) - signed_log1p(true)))),
        "accuracy": tolerance_accuracy(pred, true),
    }


def median_baselines(
    train_target: np.ndarray, train_topics: np.ndarray, topics: np.ndarray
) -> dict[str, np.ndarray]:
    """Global median and per-topic median of the training targets (unseen topic: global)."""
    global_median = float(np.median(train_target))
    per_topic = {t: float(np.median(train_target[train_topics == t])) for t in set(train_topics)}
    return {
        "global_median": np.full(len(topics), global_median),
        "topic_median": np.array([per_topic.get(t, global_median) for t in topics]),
    }
