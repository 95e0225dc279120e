"""The served-versus-trained comparison: the tree-parity tolerance, and a refusal that says where.

The whole check (a linear-tree booster refused, nothing in MLflow) runs against a real feature
table in tests/integration/test_training_run.py.
"""

from __future__ import annotations

import numpy as np

from financemath_mlops.training.servable import ATOL, RTOL, score_mismatch


def test_scores_alike_within_the_tree_parity_tolerance_pass():
    trained = np.array([1.0, -2.5, 0.0, 1e6])
    served = trained * (1 + RTOL / 2) + np.array([0.0, 0.0, ATOL / 2, 0.0])
    assert (RTOL, ATOL) == (1e-6, 1e-12)
    assert score_mismatch(served, trained) is None


def test_an_evaluator_that_scores_otherwise_is_named_with_its_worst_row():
    trained = np.linspace(-1.0, 1.0, 50)
    broken = trained.copy()
    broken[[3, 17]] += [1e-4, 0.3]  # e.g. a split rule read the wrong way round
    message = score_mismatch(broken, trained)
    assert message is not None
    assert "differ on 2 of 50 training rows" in message
    assert "worst row 17" in message


def test_nan_and_shape_differences_are_mismatches():
    assert score_mismatch(np.array([np.nan, 1.0]), np.array([0.0, 1.0])) is not None
    assert score_mismatch(np.array([np.nan]), np.array([np.nan])) is None
    assert "shape" in (score_mismatch(np.zeros((3, 2)), np.zeros(3)) or "")
