"""The candidate ranker under the evaluation report's repeated nested CV (pure: arrays in, out).

Same seeds and outer folds as :func:`.nested.repeated_nested_cv` (the folds depend on the topics
and the seed only). In every outer fold, an inner CV on the outer-training rows alone chooses the
ranker's confidence threshold (the default regressor's inner out-of-fold estimates stand in as the
fallback there); then the ranker is refitted on all outer-training rows and answers the outer
rows: its best candidate when the score reaches the threshold, else the nested regressor's
out-of-fold prediction (the report's ``model``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from financemath_mlops.evaluation.candidates import Candidates, build_candidates
from financemath_mlops.evaluation.nested import Candidate, CVData, fit_predict, outer_fold_tasks
from financemath_mlops.evaluation.ranker import (
    Pick,
    answer,
    best_candidate,
    choose_threshold,
    fit_ranker,
)
from financemath_mlops.scoring import financemath_correct
from financemath_mlops.training.split import stratified_kfold_indices

SCALE_SLACK = 1.5  # a "same scale" answer is within this factor of the truth's magnitude
INNER_FALLBACK = Candidate("full", False, "configured")  # the served regressor's feature set


def candidate_labels(values: np.ndarray, truth: float) -> np.ndarray:
    """1 where a candidate is the answer: within tolerance, same sign and same scale."""
    out = np.zeros(len(values), dtype=np.int8)
    if not np.isfinite(truth):
        return out
    for i, value in enumerate(values):
        if not financemath_correct(value, truth):
            continue
        if truth == 0 or value == 0:
            out[i] = value == truth
            continue
        ratio = abs(value / truth)
        out[i] = value * truth > 0 and 1 / SCALE_SLACK < ratio < SCALE_SLACK
    return out


@dataclass
class RankerData:
    """Every record's candidates and their labels, row-aligned with :class:`.nested.CVData`."""

    candidates: list[Candidates]
    labels: list[np.ndarray]

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]]) -> RankerData:
        cands = [build_candidates(str(r["question"]), r.get("tables") or []) for r in records]
        labels = [candidate_labels(c.values, float(r["ground_truth"])) for c, r in zip(cands, records, strict=True)]  # fmt: skip
        return cls(cands, labels)

    def coverage(self, truths: np.ndarray) -> dict[str, float]:
        """Share of rows where some candidate is correct (tolerance), or labelled 1 (strict)."""
        tolerant = [
            any(financemath_correct(v, t) for v in c.values)
            for c, t in zip(self.candidates, truths, strict=True)
        ]
        return {
            "tolerance": float(np.mean(tolerant)),
            "same_scale": float(np.mean([lab.any() for lab in self.labels])),
            "candidates_mean": float(np.mean([len(c.values) for c in self.candidates])),
            "candidates_max": int(max(len(c.values) for c in self.candidates)),
        }

    def fit(self, rows: np.ndarray, seed: int, params=None, estimates=None) -> Any:
        return fit_ranker(
            [self.candidates[i] for i in rows], [self.labels[i] for i in rows], seed, params,
            estimates,
        )  # fmt: skip

    def picks(self, booster: Any, rows: np.ndarray, estimates=None) -> list[Pick | None]:
        guesses = [None] * len(rows) if estimates is None else list(estimates)
        return [
            best_candidate(booster, self.candidates[i], g)
            for i, g in zip(rows, guesses, strict=True)
        ]


def ranker_outer_fold(
    rdata: RankerData,
    data: CVData,
    lgb_settings: dict[str, dict[str, Any]],
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    fallback: np.ndarray,
    inner_folds: int,
    seed: int,
    params=None,
    use_estimate: bool = False,
) -> dict[str, Any]:
    """Threshold from the inner CV, then the ranker's answers on the outer rows."""
    picks_inner: list[Pick | None] = [None] * len(train_idx)
    fallback_inner = np.empty(len(train_idx))
    inner = stratified_kfold_indices(data.topics[train_idx].tolist(), inner_folds, seed + 1000)
    for part_train, part_valid in inner:
        fallback_inner[part_valid] = fit_predict(
            INNER_FALLBACK, lgb_settings, data, train_idx[part_train], train_idx[part_valid], seed
        )
    # With the estimate feature, training rows carry their inner out-of-fold estimates.
    for part_train, part_valid in inner:
        booster = rdata.fit(
            train_idx[part_train], seed, params,
            fallback_inner[part_train] if use_estimate else None,
        )  # fmt: skip
        chosen = rdata.picks(
            booster, train_idx[part_valid], fallback_inner[part_valid] if use_estimate else None
        )
        for j, pick in zip(part_valid, chosen, strict=True):
            picks_inner[j] = pick
    threshold = choose_threshold(picks_inner, fallback_inner, data.target[train_idx])
    booster = rdata.fit(train_idx, seed, params, fallback_inner if use_estimate else None)
    picks = rdata.picks(booster, valid_idx, fallback if use_estimate else None)
    return {
        "valid": valid_idx,
        "threshold": threshold,
        "ranker": np.array([answer(p, f, threshold) for p, f in zip(picks, fallback, strict=True)]),
        "always": np.array([answer(p, f, 0.0) for p, f in zip(picks, fallback, strict=True)]),
        "confidence": np.array([p.confidence if p else np.nan for p in picks]),
        "answered": np.array([p is not None and p.confidence >= threshold for p in picks]),
    }


def repeated_ranker_cv(
    rdata: RankerData,
    data: CVData,
    lgb_settings: dict[str, dict[str, Any]],
    fallback: np.ndarray,
    folds: int = 5,
    seeds: int = 5,
    inner_folds: int = 3,
    jobs: int = 1,
    params=None,
    use_estimate: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Out-of-fold answers, shape (seeds, n): ``ranker`` (thresholded over ``fallback``, the
    nested regressor's predictions of the same shape) and ``always`` (the best candidate
    whenever there is one), plus the chosen thresholds and which rows the ranker answered."""
    from joblib import Parallel, delayed

    n = len(data.target)
    tasks = outer_fold_tasks(data, folds, seeds)
    runner = Parallel(n_jobs=jobs, return_as="generator")
    results = runner(
        delayed(ranker_outer_fold)(
            rdata,
            data,
            lgb_settings,
            tr,
            va,
            fallback[seed, va],
            inner_folds,
            seed,
            params,
            use_estimate,
        )
        for seed, tr, va in tasks
    )
    out = {k: np.full((seeds, n), np.nan) for k in ("ranker", "always", "confidence")}
    answered = np.zeros((seeds, n), dtype=bool)
    thresholds: list[float] = []
    for done, ((seed, _, _), result) in enumerate(zip(tasks, results, strict=True), start=1):
        for key in out:
            out[key][seed, result["valid"]] = result[key]
        answered[seed, result["valid"]] = result["answered"]
        thresholds.append(result["threshold"])
        if progress is not None:
            progress(done, len(tasks))
    return {"predictions": out, "answered": answered, "thresholds": thresholds}
