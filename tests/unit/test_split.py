"""Holdout split determinism and stratification; k-fold coverage."""

from __future__ import annotations

from collections import Counter

import numpy as np

from financemath_mlops.training.split import holdout_split, kfold_indices

IDS = [f"q{i}" for i in range(100)]
TOPICS = ["A"] * 50 + ["B"] * 30 + ["C"] * 19 + ["D"]


def test_same_seed_same_split_regardless_of_order() -> None:
    first = holdout_split(IDS, TOPICS, 0.2, seed=7)
    reversed_split = holdout_split(IDS[::-1], TOPICS[::-1], 0.2, seed=7)
    assert set(first[1]) == set(reversed_split[1])
    assert first != holdout_split(IDS, TOPICS, 0.2, seed=8)


def test_split_is_disjoint_complete_and_stratified() -> None:
    train, holdout = holdout_split(IDS, TOPICS, 0.2, seed=1)
    assert not set(train) & set(holdout)
    assert sorted(train + holdout) == sorted(IDS)
    topic_of = dict(zip(IDS, TOPICS, strict=True))
    counts = Counter(topic_of[i] for i in holdout)
    assert counts == {"A": 10, "B": 6, "C": 4}  # round(0.2 * n) per topic; singleton D stays


def test_kfold_covers_every_row_once() -> None:
    folds = kfold_indices(23, 5, seed=3)
    assert len(folds) == 5
    valid = np.concatenate([v for _, v in folds])
    assert sorted(valid.tolist()) == list(range(23))
    for train, valid_part in folds:
        assert not set(train) & set(valid_part)
