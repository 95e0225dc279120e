"""The candidate ranker: which of a record's candidates (:mod:`.candidates`) is the answer?

A LightGBM binary classifier over candidate features, trained on "this candidate is the answer"
(within FinanceMath's tolerance *and* of the same sign and scale, so that a pick is also right on
the log scale). Per record the best-scored candidate answers when its score reaches a threshold
chosen by cross-validation; below it the regressor's estimate stands. Saved as a LightGBM text
model, like the regressor, so any tree evaluator that reads LightGBM text can serve it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from financemath_mlops.evaluation.candidates import FEATURE_NAMES, Candidates
from financemath_mlops.model.target import signed_log1p

RANKER_FILE = "ranker.txt"
NEGATIVE_SHARE = 0.1  # negatives kept for training (all positives are kept), re-weighted
RANKER_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "n_estimators": 150,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "reg_lambda": 1.0,
}


ESTIMATE_FEATURES = ("log_vs_estimate", "abs_log_vs_estimate")


def ranker_features(cands: Candidates, estimate: float | None) -> np.ndarray:
    """The candidates' features, plus their distance to the regressor's estimate when given."""
    if estimate is None:
        return cands.features
    gap = signed_log1p(cands.values) - float(signed_log1p(np.array([estimate]))[0])
    return np.column_stack([cands.features, gap, np.abs(gap)])


def fit_ranker(
    candidates: Sequence[Candidates],
    labels: Sequence[np.ndarray],
    seed: int,
    params=None,
    estimates: Sequence[float] | None = None,
) -> Any:
    """Fit the classifier on training records' candidates and their 0/1 labels (see
    :func:`financemath_mlops.evaluation.ranker_cv.candidate_labels`); a LightGBM Booster, or None
    when no candidate is labelled 1."""
    import lightgbm as lgb

    rng = np.random.default_rng(seed)
    xs, ys, ws = [], [], []
    guesses = [None] * len(candidates) if estimates is None else list(estimates)
    for cands, label, guess in zip(candidates, labels, guesses, strict=True):
        if not len(cands.values):
            continue
        keep = (label == 1) | (rng.random(len(label)) < NEGATIVE_SHARE)
        xs.append(ranker_features(cands, guess)[keep])
        ys.append(label[keep])
        ws.append(np.where(label[keep] == 1, 1.0, 1.0 / NEGATIVE_SHARE))
    if not xs:
        return None
    y = np.concatenate(ys)
    if y.sum() == 0:
        return None
    model = lgb.LGBMClassifier(
        **{"random_state": seed, "verbose": -1, "n_jobs": 1, **(params or RANKER_PARAMS)}
    )
    names = list(FEATURE_NAMES) + (list(ESTIMATE_FEATURES) if estimates is not None else [])
    model.fit(np.vstack(xs), y, sample_weight=np.concatenate(ws), feature_name=names)
    return model.booster_


@dataclass(frozen=True)
class Pick:
    """The best candidate of one record: its value, how it was built and its score."""

    value: float
    built_as: str
    operation: str
    confidence: float


def best_candidate(booster: Any, cands: Candidates, estimate: float | None = None) -> Pick | None:
    """The best-scored candidate (``estimate``: the regressor's, if the ranker was fitted with)."""
    if booster is None or not len(cands.values):
        return None
    features = ranker_features(cands, estimate)
    scores = np.asarray(booster.predict(features, num_threads=1), dtype=np.float64)
    i = int(np.argmax(scores))
    return Pick(float(cands.values[i]), cands.describe(i), cands.operations[i], float(scores[i]))


def answer(pick: Pick | None, fallback: float, threshold: float) -> float:
    """The pick's value when its confidence reaches ``threshold``, else the regressor's."""
    if pick is not None and pick.confidence >= threshold:
        return pick.value
    return fallback


THRESHOLDS = tuple(np.round(np.arange(0.0, 1.0, 0.05), 2)) + (1.01,)


def choose_threshold(
    picks: Sequence[Pick | None], fallbacks: np.ndarray, truths: np.ndarray
) -> float:
    """The threshold with the lowest log-MAE of the combined answers (lowest threshold on ties)."""
    best, best_loss = THRESHOLDS[-1], np.inf
    log_truth = signed_log1p(truths)
    for threshold in THRESHOLDS:
        answers = np.array([answer(p, f, threshold) for p, f in zip(picks, fallbacks, strict=True)])
        loss = float(np.mean(np.abs(signed_log1p(answers) - log_truth)))
        if loss < best_loss - 1e-12:
            best, best_loss = float(threshold), loss
    return best
