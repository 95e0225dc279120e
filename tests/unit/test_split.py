"""Holdout split determinism and stratification; k-fold coverage."""

from __future__ import annotations

from collections import Counter

import numpy as np

from financemath_mlops.training.split import holdout_split, kfold_indices, stratified_kfold_indices

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


def test_stratified_kfold_spreads_each_topic_evenly_and_covers_every_row_once() -> None:
    folds = stratified_kfold_indices(TOPICS, 5, seed=3)
    assert len(folds) == 5
    valid = np.concatenate([v for _, v in folds])
    assert sorted(valid.tolist()) == list(range(len(TOPICS)))
    for train, valid_part in folds:
        assert not set(train) & set(valid_part)
        counts = Counter(TOPICS[i] for i in valid_part)
        assert counts["A"] == 10 and counts["B"] == 6 and counts["C"] in (3, 4)
    sizes = sorted(len(v) for _, v in folds)
    assert sizes[-1] - sizes[0] <= 1
    assert [v.tolist() for _, v in folds] == [
        v.tolist() for _, v in stratified_kfold_indices(TOPICS, 5, seed=3)
    ]
    assert [v.tolist() for _, v in folds] != [
        v.tolist() for _, v in stratified_kfold_indices(TOPICS, 5, seed=4)
    ]
