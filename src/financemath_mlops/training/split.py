"""Deterministic holdout split and k-fold indices for cross-validation, both stratified by topic."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np


def holdout_split(
    ids: Sequence[str], topics: Sequence[str | None], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Split ids into (train, holdout): per topic, round(fraction * n) rows go to the holdout.

    Deterministic for (ids, topics, fraction, seed) regardless of input order. Topics with a single
    row stay in training (a holdout of one row per rare topic would say nothing).
    """
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    by_topic: dict[str, list[str]] = defaultdict(list)
    for qid, topic in zip(ids, topics, strict=True):
        by_topic[str(topic)].append(qid)
    rng = np.random.default_rng(seed)
    holdout: set[str] = set()
    for topic in sorted(by_topic):
        members = sorted(by_topic[topic])
        take = int(round(fraction * len(members))) if len(members) > 1 else 0
        take = min(take, len(members) - 1)
        order = rng.permutation(len(members))
        holdout.update(members[i] for i in order[:take])
    train = [qid for qid in ids if qid not in holdout]
    return train, [qid for qid in ids if qid in holdout]


def kfold_indices(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold (train_idx, valid_idx) pairs; folds are capped at n."""
    folds = max(2, min(folds, n))
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, folds)
    return [
        (np.concatenate([p for j, p in enumerate(parts) if j != i]), parts[i]) for i in range(folds)
    ]


def stratified_kfold_indices(
    topics: Sequence[str | None], folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """k-fold (train_idx, valid_idx) pairs with each topic spread evenly over the folds.

    Per topic (in sorted order) the rows are shuffled and dealt to the folds in turn, continuing
    where the previous topic stopped, so fold sizes differ by at most one and a topic with n rows
    has floor(n/k) or ceil(n/k) of them in every fold. Deterministic for (topics, folds, seed).
    """
    n = len(topics)
    folds = max(2, min(folds, n))
    rng = np.random.default_rng(seed)
    labels = np.array([str(t) for t in topics])
    assignment = np.empty(n, dtype=np.int64)
    start = int(rng.integers(folds))
    for topic in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == topic)
        members = members[rng.permutation(len(members))]
        assignment[members] = (start + np.arange(len(members))) % folds
        start = (start + len(members)) % folds
    everything = np.arange(n)
    return [(everything[assignment != i], everything[assignment == i]) for i in range(folds)]
