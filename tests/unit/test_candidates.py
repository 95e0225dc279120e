"""Candidate answers from a question's numbers, the ranker that picks one, and their bounds."""

from __future__ import annotations

import numpy as np
import pytest

from financemath_mlops.evaluation.candidates import (
    FEATURE_NAMES,
    MAX_CANDIDATES,
    MAX_OPERANDS,
    MAX_QUESTION_CHARS,
    build_candidates,
)
from financemath_mlops.evaluation.ranker import answer, best_candidate, choose_threshold, fit_ranker
from financemath_mlops.evaluation.ranker_cv import candidate_labels
from financemath_mlops.scoring import financemath_correct

CHANGE = (
    "Revenue rose from $120 million in 2020 to $150 million in 2021. By what percent did it grow?"
)


def test_one_operation_on_two_numbers_is_a_candidate_and_says_how_it_was_built() -> None:
    cands = build_candidates(CHANGE, [])
    assert [o.value for o in cands.numbers] == [120.0, 2020.0, 150.0, 2021.0]
    hits = [i for i, v in enumerate(cands.values) if abs(v - 25.0) < 1e-9]
    assert hits, "the percent change 150/120 - 1 = 25 % must be among the candidates"
    assert cands.describe(hits[0]) == "(150 / 120 - 1) * 100"
    assert cands.features.shape == (len(cands.values), len(FEATURE_NAMES))
    assert len(set(np.round(cands.values, 9))) == len(cands.values)  # de-duplicated


def test_table_cells_become_operands_after_the_question_numbers() -> None:
    table = "| item | 2020 | 2021 |\n|---|---|---|\n| sales | 80 | 100 |\n| margin | 5% | 6% |"
    cands = build_candidates("What is the sales growth from 40?", [table])
    values = [o.value for o in cands.numbers]
    assert values[0] == 40.0 and {80.0, 100.0, 5.0, 6.0} <= set(values)
    assert [o.percent for o in cands.numbers if o.value in (5.0, 6.0)] == [True, True]
    assert any(o.from_table for o in cands.numbers) and not cands.numbers[0].from_table


def test_a_question_without_numbers_has_no_candidates() -> None:
    cands = build_candidates("What is the capital of France?", [])
    assert len(cands.values) == 0 and cands.features.shape == (0, len(FEATURE_NAMES))


def test_thousands_of_numbers_stay_within_the_caps() -> None:
    """Bounded by counting, not timing: operands and candidates never exceed the caps."""
    question = " ".join(str(i) for i in range(1, 20_001))  # 20,000 distinct numbers
    table = "|" + "|".join("h" for _ in range(40)) + "|\n|" + "---|" * 40 + "\n"
    table += "\n".join("|" + "|".join(str(r * 40 + c) for c in range(40)) + "|" for r in range(50))
    cands = build_candidates(question, [table] * 10)
    assert len(cands.numbers) == MAX_OPERANDS
    assert 0 < len(cands.values) <= MAX_CANDIDATES
    assert MAX_CANDIDATES == MAX_OPERANDS + MAX_OPERANDS * (MAX_OPERANDS - 1) * 7


def test_numbers_beyond_the_scanned_prefix_are_ignored() -> None:
    question = "x" * MAX_QUESTION_CHARS + " 12345 and 678"
    assert build_candidates(question, []).numbers == []


def test_labels_need_tolerance_sign_and_scale() -> None:
    values = np.array([25.0, 0.25, -25.0, 25.02, 2500.0])
    assert candidate_labels(values, 25.0).tolist() == [1, 0, 0, 1, 0]
    assert all(financemath_correct(v, 25.0) for v in (0.25, -25.0, 2500.0))  # the rule forgives


def _change_questions(n: int, seed: int) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    cands, labels = [], []
    for _ in range(n):
        a, b, c = (int(x) for x in rng.integers(10, 900, size=3))
        question = (
            f"Costs were {c}. Sales went from {a} to {b}. What is the percent change in sales?"
        )
        found = build_candidates(question, [])
        cands.append(found)
        labels.append(candidate_labels(found.values, (b / a - 1) * 100))
    return cands, labels


def test_the_ranker_learns_which_construction_answers() -> None:
    cands, labels = _change_questions(120, seed=1)
    booster = fit_ranker(cands[:80], labels[:80], seed=0)
    picks = [best_candidate(booster, c) for c in cands[80:]]
    right = [bool(lab[list(c.values).index(p.value)]) for p, c, lab in zip(picks, cands[80:], labels[80:], strict=True)]  # fmt: skip
    assert np.mean(right) >= 0.9
    assert all(p.operation == "change_pct" and 0 <= p.confidence <= 1 for p in picks)
    assert "/" in picks[0].built_as


def test_no_positive_label_means_no_ranker_and_the_fallback_answers() -> None:
    cands, labels = _change_questions(5, seed=2)
    assert fit_ranker(cands, [np.zeros_like(lab) for lab in labels], seed=0) is None
    assert best_candidate(None, cands[0]) is None
    assert answer(None, 7.0, 0.0) == 7.0


@pytest.mark.parametrize(("good", "expected"), [(True, 0.0), (False, 1.01)])
def test_the_threshold_follows_the_log_error(good: bool, expected: float) -> None:
    from financemath_mlops.evaluation.ranker import Pick

    truths = np.array([10.0, 20.0, 30.0])
    values = truths if good else truths * 1e6
    picks = [Pick(float(v), "x", "copy", 0.99) for v in values]
    assert choose_threshold(picks, np.array([11.0, 21.0, 31.0]), truths) == expected


def test_ranker_cv_answers_every_row_with_a_candidate_or_the_fallback() -> None:
    from financemath_mlops.evaluation.nested import CVData
    from financemath_mlops.evaluation.ranker_cv import RankerData, repeated_ranker_cv

    rng = np.random.default_rng(3)
    records = []
    for _ in range(60):
        a, b, c = (int(x) for x in rng.integers(10, 900, size=3))
        question = (
            f"Costs were {c}. Sales went from {a} to {b}. What is the percent change in sales?"
        )
        records.append({"question": question, "tables": [], "ground_truth": (b / a - 1) * 100})
    truths = np.array([r["ground_truth"] for r in records])
    data = CVData(
        hand=rng.normal(size=(60, 4)),
        embeddings=rng.normal(size=(60, 8)),
        numbers_median=np.zeros(60),
        target=truths,
        topics=np.array(["A", "B"] * 30),
    )
    small = {"objective": "l1", "n_estimators": 20, "num_leaves": 4, "min_child_samples": 5}
    fallback = np.full((1, 60), 12345.0)
    rdata = RankerData.from_records(records)
    out = repeated_ranker_cv(rdata, data, {"configured": small}, fallback, folds=2, seeds=1)
    answers, answered = out["predictions"]["ranker"][0], out["answered"][0]
    for value, yes, cands in zip(answers, answered, rdata.candidates, strict=True):
        assert (value in cands.values) if yes else value == 12345.0
    assert len(out["thresholds"]) == 2
    hits = [financemath_correct(v, t) for v, t in zip(answers, truths, strict=True)]
    assert np.mean(hits) >= 0.8  # an easy, learnable construction: the ranker answers it
