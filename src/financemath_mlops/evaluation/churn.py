"""Prediction churn: how far two models' predictions sit apart, and the int8 rule built on it.

Retraining alone moves predictions (LightGBM bagging and feature sampling, other outer folds), so
"int8 embeddings change nothing that matters" is judged against that: the churn int8 adds on the
same seed and folds (precision churn) must not exceed the churn of one retrain (fp32 seed s vs
seed s+1) by ``MARGIN`` or more. Churn needs no labels, so it is measured on every FinanceMath
question; the labelled rows add each pair's loss difference.

``MARGIN`` was stated (and committed) before the measurement was run; changing it after seeing
the figures would make the rule meaningless.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from financemath_mlops.evaluation.nested import Candidate, CVData, fit_predict, log_errors
from financemath_mlops.intervals import paired_bootstrap
from financemath_mlops.model.target import signed_log1p
from financemath_mlops.training.split import stratified_kfold_indices

# Precision churn minus retrain churn, on the signed-log1p scale (mean |slog(a) - slog(b)| per
# row): int8 may move a prediction by at most about 2 % more than a retrain does on average.
MARGIN = 0.02

# The served model's features and setting (hand features + all 384 dimensions, configured
# LightGBM): the rule judges the model that would be served, not the nested CV's choice.
SERVED = Candidate("full", False, "configured")


def churn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row churn between prediction sets ``a`` and ``b`` of shape (pairs, rows): the mean over
    pairs of |slog(a) - slog(b)|. The mean of it over rows is the churn of the two models."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(
            f"churn needs two (pairs, rows) arrays of one shape, got {a.shape}, {b.shape}"
        )
    return np.abs(signed_log1p(a) - signed_log1p(b)).mean(axis=0)


def next_seed(predictions: np.ndarray) -> np.ndarray:
    """Seed s+1's predictions in seed s's place (the last seed pairs with the first), so that
    ``churn(next_seed(p), p)`` is the retrain churn over as many pairs as there are seeds."""
    if len(predictions) < 2:
        raise ValueError("retrain churn needs at least 2 seeds")
    return np.roll(predictions, -1, axis=0)


def mean_pair_interval(
    loss_new: np.ndarray, loss_old: np.ndarray, samples: int, seed: int = 0
) -> dict[str, float]:
    """Each pair's paired bootstrap of new-minus-old per-row loss (the report's bootstrap, the same
    resamples for every pair), then difference, low and high averaged over the pairs.

    Averaging per row over pairs first would be wrong for the retrain pairs: seed s+1 minus seed s
    summed round the seeds cancels to zero on every row, whatever retraining does.
    """
    diffs = [
        paired_bootstrap(new, old, samples, seed).as_dict()
        for new, old in zip(loss_new, loss_old, strict=True)
    ]
    out = {k: float(np.mean([d[k] for d in diffs])) for k in ("difference", "low", "high")}
    return {"n": diffs[0]["n"], **out, "confidence": diffs[0]["confidence"], "pairs": len(diffs)}


def deal(topics: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Unlabelled rows dealt to ``folds`` outer folds, stratified by topic (row indices per fold);
    fewer rows than folds: row j goes to fold j."""
    if len(topics) < folds:
        return [np.arange(len(topics))[np.arange(len(topics)) == k] for k in range(folds)]
    return [valid for _, valid in stratified_kfold_indices(topics.tolist(), folds, seed)]


def served_predictions(
    data: CVData,
    labelled: int,
    settings: dict[str, dict[str, Any]],
    folds: int,
    seeds: int,
) -> np.ndarray:
    """The served candidate's predictions, shape (seeds, rows), from models fitted on the card's
    outer folds: the first ``labelled`` rows of ``data`` are the report's rows (same topic-stratified
    folds per seed, so each gets its out-of-fold prediction); every later (unlabelled) row is
    dealt to one outer fold per seed, stratified by topic, and predicted by that fold's model, so
    each prediction of any row comes from one model fitted on the same share of labelled rows."""
    n = len(data.target)
    rows_l, rows_u = np.arange(labelled), np.arange(labelled, n)
    out = np.full((seeds, n), np.nan)
    for seed in range(seeds):
        outer = stratified_kfold_indices(data.topics[:labelled].tolist(), folds, seed)
        dealt = deal(data.topics[labelled:], len(outer), seed)
        for (train, valid), extra in zip(outer, dealt, strict=True):
            apply = np.concatenate([rows_l[valid], rows_u[extra]])
            out[seed, apply] = fit_predict(SERVED, settings, data, rows_l[train], apply, seed)
    return out


def precision_rule(
    fp32: np.ndarray, int8: np.ndarray, target: np.ndarray, samples: int, margin: float = MARGIN
) -> dict[str, Any]:
    """The int8 rule over two (seeds, rows) prediction sets whose first ``len(target)`` rows are
    labelled: retrain churn (fp32 seed s vs s+1), precision churn (int8 vs fp32, seed s), their
    paired difference, and each pair's labelled log-MAE difference. int8 qualifies when the
    churn difference's upper end is below ``margin`` and int8's loss interval lies inside the
    retrain pair's."""
    retrain = churn(next_seed(fp32), fp32)
    precision = churn(int8, fp32)
    difference = paired_bootstrap(precision, retrain, samples, 0).as_dict()
    n = len(target)
    loss_fp32, loss_int8 = log_errors(fp32[:, :n], target), log_errors(int8[:, :n], target)
    loss_retrain = mean_pair_interval(next_seed(loss_fp32), loss_fp32, samples)
    loss_precision = mean_pair_interval(loss_int8, loss_fp32, samples)
    churn_ok = difference["high"] < margin
    loss_ok = loss_retrain["low"] <= loss_precision["low"] and (
        loss_precision["high"] <= loss_retrain["high"]
    )
    return {
        "margin": margin,
        "rows": {"labelled": n, "unlabelled": int(fp32.shape[1] - n), "all": int(fp32.shape[1])},
        "seeds": int(fp32.shape[0]),
        "churn": {"retrain": float(retrain.mean()), "precision": float(precision.mean())},
        "churn_difference": difference,
        "log_mae_difference": {"retrain": loss_retrain, "precision": loss_precision},
        "log_mae": {
            "fp32": float(loss_fp32.mean()),
            "int8": float(loss_int8.mean()),
        },
        "churn_below_margin": bool(churn_ok),
        "loss_inside_retrain": bool(loss_ok),
        "int8_qualifies": bool(churn_ok and loss_ok),
    }
