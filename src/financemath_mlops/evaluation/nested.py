"""Repeated, topic-stratified, nested CV (pure: arrays in, out-of-fold predictions out).

For every seed and outer fold, an inner CV on the outer-training rows alone picks the candidate
(feature set x LightGBM setting); only that choice is refitted and scored on the outer fold. The
nested predictions therefore carry the cost of selection; the per-candidate predictions (each
candidate refitted on every outer fold) are the sweep, and picking the best of them afterwards
would be optimistic. Baselines are fitted on the same outer-training rows.

Embedding forms (all MiniLM-derived): ``full`` (384 dims), ``pca`` (k components fitted on the
training rows only) and ``similarity`` (nearest training questions by cosine similarity: their
answers, leave-self-out on training rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from financemath_mlops.evaluation.baselines import median_baselines, with_fallback
from financemath_mlops.model.target import signed_log1p
from financemath_mlops.training.fit import fit_booster, predict_booster
from financemath_mlops.training.split import stratified_kfold_indices

EmbeddingForm = Literal["full", "pca", "similarity"]
PCA_COMPONENTS = 16
NEIGHBOURS = 5
BASELINES = ("global_median", "topic_median", "numbers_median")


@dataclass(frozen=True)
class Candidate:
    embedding: EmbeddingForm
    numbers_median: bool
    setting: str

    @property
    def name(self) -> str:
        numbers = "+numbers-median" if self.numbers_median else ""
        return f"hand+{self.embedding}{numbers} / {self.setting}"


@dataclass
class CVData:
    """Everything the CV needs, row-aligned: hand features, embeddings, numbers median, target."""

    hand: np.ndarray
    embeddings: np.ndarray
    numbers_median: np.ndarray
    target: np.ndarray
    topics: np.ndarray


def similarity_features(
    data: CVData, train_idx: np.ndarray, apply_idx: np.ndarray, leave_self_out: bool
) -> np.ndarray:
    """Max cosine similarity to the training questions, and the log answers of the nearest ones."""
    sims = data.embeddings[apply_idx] @ data.embeddings[train_idx].T
    if leave_self_out:
        np.fill_diagonal(sims, -np.inf)
    k = min(NEIGHBOURS, sims.shape[1] - int(leave_self_out))
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(sims, order, axis=1)
    answers = signed_log1p(data.target[train_idx])[order]
    weights = np.clip(top, 1e-6, None)
    return np.column_stack(
        [
            top[:, 0],
            answers[:, 0],
            (weights * answers).sum(1) / weights.sum(1),
            np.median(answers, 1),
        ]
    )


def design(
    candidate: Candidate, data: CVData, train_idx: np.ndarray, apply_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrices for the training rows and the rows to predict; fitted on training rows."""
    if candidate.embedding == "full":
        emb_train, emb_apply = data.embeddings[train_idx], data.embeddings[apply_idx]
    elif candidate.embedding == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=min(PCA_COMPONENTS, len(train_idx) - 1), svd_solver="full")
        emb_train = pca.fit_transform(data.embeddings[train_idx])
        emb_apply = pca.transform(data.embeddings[apply_idx])
    else:
        emb_train = similarity_features(data, train_idx, train_idx, leave_self_out=True)
        emb_apply = similarity_features(data, train_idx, apply_idx, leave_self_out=False)
    parts_train = [data.hand[train_idx], emb_train]
    parts_apply = [data.hand[apply_idx], emb_apply]
    if candidate.numbers_median:
        parts_train.append(data.numbers_median[train_idx, None])
        parts_apply.append(data.numbers_median[apply_idx, None])
    return np.hstack(parts_train), np.hstack(parts_apply)


def fit_predict(
    candidate: Candidate,
    settings: dict[str, dict[str, Any]],
    data: CVData,
    train_idx: np.ndarray,
    apply_idx: np.ndarray,
    seed: int,
) -> np.ndarray:
    x_train, x_apply = design(candidate, data, train_idx, apply_idx)
    booster = fit_booster(
        x_train, data.target[train_idx], settings[candidate.setting], "signed_log1p", seed, 1
    )
    return predict_booster(booster, x_apply, "signed_log1p")


def log_errors(predictions: np.ndarray, truths: np.ndarray) -> np.ndarray:
    """Per-row absolute error on the signed-log1p scale (the mean of it is log-MAE)."""
    return np.abs(signed_log1p(predictions) - signed_log1p(truths))


def select(
    candidates: list[Candidate],
    settings: dict[str, dict[str, Any]],
    data: CVData,
    rows: np.ndarray,
    inner_folds: int,
    seed: int,
) -> tuple[Candidate, dict[str, float]]:
    """The candidate with the lowest inner-CV log-MAE on ``rows`` (first wins a tie)."""
    scores: dict[str, float] = {}
    splits = stratified_kfold_indices(data.topics[rows].tolist(), inner_folds, seed + 1000)
    for candidate in candidates:
        errors = np.empty(len(rows))
        for train_part, valid_part in splits:
            predictions = fit_predict(
                candidate, settings, data, rows[train_part], rows[valid_part], seed
            )
            errors[valid_part] = log_errors(predictions, data.target[rows[valid_part]])
        scores[candidate.name] = float(errors.mean())
    best = min(candidates, key=lambda c: scores[c.name])
    return best, scores


def outer_fold_tasks(data: CVData, folds: int, seeds: int) -> list[tuple[int, Any, Any]]:
    """(seed, train rows, validation rows) of every outer fold: the same folds for every model."""
    return [
        (seed, train_idx, valid_idx)
        for seed in range(seeds)
        for train_idx, valid_idx in stratified_kfold_indices(data.topics.tolist(), folds, seed)
    ]


def outer_fold(
    candidates: list[Candidate],
    settings: dict[str, dict[str, Any]],
    data: CVData,
    train_idx: np.ndarray,
    valid_idx: np.ndarray,
    inner_folds: int,
    seed: int,
) -> dict[str, Any]:
    """One outer fold: inner selection, then every candidate, the choice and the baselines."""
    chosen, inner = select(candidates, settings, data, train_idx, inner_folds, seed)
    predictions = {
        c.name: fit_predict(c, settings, data, train_idx, valid_idx, seed) for c in candidates
    }
    predictions["model"] = predictions[chosen.name]
    medians = median_baselines(
        data.target[train_idx], data.topics[train_idx], data.topics[valid_idx]
    )
    predictions.update(medians)
    predictions["numbers_median"] = with_fallback(
        data.numbers_median[valid_idx], float(np.median(data.target[train_idx]))
    )
    return {"valid": valid_idx, "predictions": predictions, "chosen": chosen.name, "inner": inner}


def repeated_nested_cv(
    candidates: list[Candidate],
    settings: dict[str, dict[str, Any]],
    data: CVData,
    folds: int = 5,
    seeds: int = 5,
    inner_folds: int = 3,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Out-of-fold predictions, shape (seeds, n), for the nested model, each candidate, baselines.

    Also returns how often each candidate was chosen (``chosen``, one entry per outer fold).
    """
    from joblib import Parallel, delayed

    n = len(data.target)
    tasks = outer_fold_tasks(data, folds, seeds)
    runner = Parallel(n_jobs=jobs, return_as="generator")
    results = runner(
        delayed(outer_fold)(candidates, settings, data, tr, va, inner_folds, seed)
        for seed, tr, va in tasks
    )
    names = ["model", *BASELINES, *(c.name for c in candidates)]
    out = {name: np.full((seeds, n), np.nan) for name in names}
    chosen: list[str] = []
    for done, ((seed, _, _), result) in enumerate(zip(tasks, results, strict=True), start=1):
        for name in names:
            out[name][seed, result["valid"]] = result["predictions"][name]
        chosen.append(result["chosen"])
        if progress is not None:
            progress(done, len(tasks))
    return {"predictions": out, "chosen": chosen, "folds": folds, "seeds": seeds}
