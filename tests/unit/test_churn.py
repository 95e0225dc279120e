"""The int8 rule's arithmetic (evaluation/churn.py): churn, seed pairs, averaged intervals, folds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from financemath_mlops.evaluation import churn
from financemath_mlops.evaluation.nested import CVData, repeated_nested_cv

E1 = math.e - 1  # slog(e - 1) = 1


def test_churn_is_the_mean_over_pairs_of_the_signed_log_distance() -> None:
    a = np.array([[E1, -E1, 0.0], [E1, 0.0, 0.0]])
    b = np.array([[0.0, E1, 0.0], [E1, 0.0, -E1]])
    # row 0: |1-0|, |1-1| -> 0.5; row 1: |-1-1|, 0 -> 1.0; row 2: 0, |0+1| -> 0.5
    assert churn.churn(a, b) == pytest.approx([0.5, 1.0, 0.5])
    assert churn.churn(a, a) == pytest.approx([0.0, 0.0, 0.0])
    # a factor 10 on a large answer moves slog by about log(10), on any magnitude
    assert churn.churn(np.array([[1e6]]), np.array([[1e5]]))[0] == pytest.approx(math.log(10), 1e-4)
    with pytest.raises(ValueError, match="one shape"):
        churn.churn(a, b[:, :2])


def test_retrain_pairs_go_round_the_seeds() -> None:
    p = np.arange(12, dtype=float).reshape(4, 3)
    assert (churn.next_seed(p)[0] == p[1]).all() and (churn.next_seed(p)[3] == p[0]).all()
    same = np.tile(np.array([1.0, 50.0, -3.0]), (5, 1))
    assert (churn.churn(churn.next_seed(same), same) == 0).all()  # seeds that agree: no churn
    with pytest.raises(ValueError, match="2 seeds"):
        churn.next_seed(p[:1])


def test_retrain_loss_interval_does_not_cancel_round_the_seeds() -> None:
    rng = np.random.default_rng(0)
    loss = rng.exponential(1.0, 200) + rng.normal(0, 0.5, (5, 200))  # each retrain: new noise
    retrain = churn.mean_pair_interval(churn.next_seed(loss), loss, 500)
    assert retrain["pairs"] == 5 and retrain["difference"] == pytest.approx(0.0, abs=1e-12)
    assert retrain["low"] < -0.05 and retrain["high"] > 0.05  # one retrain's real spread
    tiny = churn.mean_pair_interval(loss + rng.normal(0, 0.01, loss.shape), loss, 500)
    assert retrain["low"] < tiny["low"] < tiny["high"] < retrain["high"]


def _predictions(precision_noise: float, shift: float = 0.0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(1)
    truth = np.exp(rng.normal(3, 2, 300))
    model = truth * np.exp(rng.normal(0, 1.0, 300))  # a model with its own error
    fp32 = model * np.exp(rng.normal(0, 0.3, (5, 300)))  # retraining moves each seed
    int8 = fp32 * np.exp(rng.normal(shift, precision_noise, (5, 300)))
    return fp32, int8, truth[:100]  # the first 100 rows are labelled


def test_int8_qualifies_when_it_moves_predictions_less_than_a_retrain() -> None:
    fp32, int8, target = _predictions(0.05)
    rule = churn.precision_rule(fp32, int8, target, 500)
    assert rule["rows"] == {"labelled": 100, "unlabelled": 200, "all": 300}
    assert rule["churn"]["precision"] < rule["churn"]["retrain"]
    assert rule["churn_difference"]["high"] < churn.MARGIN
    assert rule["churn_below_margin"] and rule["loss_inside_retrain"] and rule["int8_qualifies"]


def test_int8_fails_when_it_moves_predictions_more_than_a_retrain() -> None:
    rule = churn.precision_rule(*_predictions(0.8), 500)
    assert rule["churn_difference"]["low"] > churn.MARGIN and not rule["churn_below_margin"]
    assert not rule["int8_qualifies"]


def test_int8_fails_when_its_loss_moves_beyond_a_retrains() -> None:
    fp32, int8, target = _predictions(0.05, shift=1.5)  # a systematic x4.5: the loss moves
    rule = churn.precision_rule(fp32, int8, target, 500)
    assert not rule["loss_inside_retrain"] and not rule["int8_qualifies"]


def test_served_predictions_are_the_reports_out_of_fold_ones_plus_every_unlabelled_row() -> None:
    rng = np.random.default_rng(2)
    n, extra = 60, 23
    hand = rng.normal(size=(n + extra, 4))
    emb = rng.normal(size=(n + extra, 6))
    target = np.concatenate([np.exp(hand[:n, 0] + 2), np.full(extra, np.nan)])
    topics = np.array(["a", "b", "c"] * ((n + extra) // 3) + ["a"] * ((n + extra) % 3))
    data = CVData(hand, emb, np.zeros(n + extra), target, topics)
    settings = {"configured": {"objective": "l1", "n_estimators": 10, "num_leaves": 4,
                               "min_child_samples": 5, "subsample": 0.8, "subsample_freq": 1,
                               "colsample_bytree": 0.5}}  # fmt: skip
    got = churn.served_predictions(data, n, settings, folds=3, seeds=2)
    assert got.shape == (2, n + extra) and np.isfinite(got).all()
    labelled = CVData(hand[:n], emb[:n], np.zeros(n), target[:n], topics[:n])
    report = repeated_nested_cv([churn.SERVED], settings, labelled, folds=3, seeds=2)
    assert np.array_equal(got[:, :n], report["predictions"][churn.SERVED.name])
    assert [len(f) for f in churn.deal(topics[:2], 3, 0)] == [1, 1, 0]


def test_report_refuses_a_missing_unlabelled_file_naming_it(tmp_path, capsys) -> None:
    from financemath_mlops.cli import run_main
    from financemath_mlops.evaluation.__main__ import main
    from tests.helpers import make_rows, write_json

    labelled = write_json(tmp_path / "validation.json", make_rows(5))
    missing, card = tmp_path / "tset.json", tmp_path / "card.md"
    argv = ["report", "--input", str(labelled), "--unlabelled", str(missing), "--card", str(card)]
    assert run_main(main, argv) == 2
    assert f"--unlabelled file not found: {missing}" in capsys.readouterr().err
    assert not card.exists()
