"""The evaluation report's parts: paired intervals, baselines, nested CV, the rendered card."""

from __future__ import annotations

import json

import numpy as np
import pytest

from financemath_mlops.evaluation.baselines import (
    chance_accuracy,
    numbers_median,
    record_numbers,
    with_fallback,
)
from financemath_mlops.evaluation.card import render_card
from financemath_mlops.evaluation.nested import (
    Candidate,
    CVData,
    log_errors,
    repeated_nested_cv,
    similarity_features,
)
from financemath_mlops.intervals import paired_bootstrap
from tests.helpers import REPO_ROOT


def test_paired_bootstrap_separates_a_real_difference_from_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.exponential(1.0, 200)
    better = base - 0.5 + rng.normal(0, 0.1, 200)
    win = paired_bootstrap(better, base, samples=1000, seed=1)
    assert win.n == 200 and win.favours_a() and -0.6 < win.low < win.high < -0.4
    assert win.low <= win.difference <= win.high
    noise = paired_bootstrap(base + rng.normal(0, 0.1, 200), base, samples=1000, seed=1)
    assert noise.low < 0 < noise.high and not noise.favours_a()
    assert not win.favours_a(margin=1.0)  # a documented margin larger than the gain: no win
    assert paired_bootstrap(better, base, samples=1000, seed=1) == win  # deterministic


def test_paired_bootstrap_median_statistic_and_bad_input() -> None:
    a = np.array([1.0, 2.0, 3.0, 100.0, 5.0])
    b = a + 1.0
    out = paired_bootstrap(a, b, samples=300, statistic="median")
    assert out.difference == pytest.approx(-1.0) and out.high == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(a, b[:3])
    with pytest.raises(ValueError, match="no rows"):
        paired_bootstrap(np.array([]), np.array([]))


def test_numbers_median_reads_question_and_table_numbers() -> None:
    numbers = record_numbers(
        "A loan of $1,000 at 5% for 3 years.", ["| a | b |\n|---|---|\n| x | 20% |\n| y | 7 |"]
    )
    assert sorted(numbers) == [3.0, 5.0, 7.0, 20.0, 1000.0]
    medians = numbers_median([numbers, []])
    assert medians[0] == 7.0 and np.isnan(medians[1])
    assert with_fallback(medians, 16.0).tolist() == [7.0, 16.0]


def test_chance_control_counts_hits_from_other_questions_only() -> None:
    # Each question's own numbers contain its answer; the other question's never do.
    numbers = [[10.0], [7.0]]
    truths = np.array([10.0, 7.0])
    out = chance_accuracy(numbers, truths, draws=5)
    assert out["own_any_number"] == 1.0 and out["any_number"] == 0.0 and out["one_number"] == 0.0
    # The rule forgives powers of ten: 100 counts against 10 (from the other question).
    out = chance_accuracy([[10.0], [100.0]], np.array([10.0, 7.0]), draws=5)
    assert out["any_number"] == 0.5


def _synthetic(n: int = 90, seed: int = 0) -> CVData:
    rng = np.random.default_rng(seed)
    signal = rng.uniform(0, 8, n)
    target = np.sign(rng.normal(size=n) + 3) * np.expm1(signal)
    emb = rng.normal(size=(n, 24))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    hand = np.column_stack([signal + rng.normal(0, 0.3, n), rng.normal(size=n)])
    return CVData(
        hand=hand,
        embeddings=emb,
        numbers_median=np.expm1(signal) * rng.uniform(0.5, 2, n),
        target=target,
        topics=np.array(["A", "B", "C"] * (n // 3)),
    )


def test_nested_cv_predicts_every_row_once_per_seed_and_learns_a_real_signal() -> None:
    data = _synthetic()
    settings = {
        "s": {"objective": "l1", "n_estimators": 40, "num_leaves": 4, "min_child_samples": 5}
    }
    candidates = [Candidate("pca", False, "s"), Candidate("similarity", True, "s")]
    out = repeated_nested_cv(candidates, settings, data, folds=3, seeds=2, inner_folds=2)
    preds = out["predictions"]
    assert set(preds) >= {"model", "global_median", "topic_median", "numbers_median"}
    assert all(p.shape == (2, 90) and np.isfinite(p).all() for p in preds.values())
    assert len(out["chosen"]) == 6 and set(out["chosen"]) <= {c.name for c in candidates}
    model = log_errors(preds["model"], data.target).mean()
    median = log_errors(preds["global_median"], data.target).mean()
    assert model < 0.6 * median


def test_similarity_features_never_use_a_training_rows_own_answer() -> None:
    data = _synthetic(30)
    rows = np.arange(30)
    feats = similarity_features(data, rows, rows, leave_self_out=True)
    own = np.sign(data.target) * np.log1p(np.abs(data.target))
    assert (feats[:, 0] < 0.999).all()  # the nearest is never the row itself
    assert not np.isclose(feats[:, 1], own).any()


def test_committed_card_is_the_rendering_of_the_committed_results() -> None:
    results = REPO_ROOT / "docs" / "model-card.json"
    card = REPO_ROOT / "docs" / "model-card.md"
    report = json.loads(results.read_text(encoding="utf-8"))
    assert render_card(report, "model-card-errors.png") == card.read_text(encoding="utf-8")
    assert (REPO_ROOT / "docs" / "model-card-errors.png").is_file()


def test_report_refuses_a_file_too_small_or_missing_with_a_reason(tmp_path, capsys) -> None:
    from financemath_mlops.cli import run_main
    from financemath_mlops.evaluation.__main__ import main
    from tests.helpers import make_rows, write_json

    small = write_json(tmp_path / "small.json", make_rows(5))
    card = tmp_path / "card.md"
    assert run_main(main, ["report", "--input", str(small), "--card", str(card)]) == 2
    assert "5 valid labelled rows" in capsys.readouterr().err and not card.exists()
    missing = tmp_path / "absent.json"
    assert run_main(main, ["report", "--input", str(missing), "--card", str(card)]) == 2
    assert "not found" in capsys.readouterr().err
