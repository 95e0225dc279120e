"""Regression metrics and FinanceMath's tolerance rule on the benchmark's edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from financemath_mlops.model.target import forward, inverse, signed_expm1, signed_log1p
from financemath_mlops.scoring import (
    financemath_correct,
    regression_metrics,
    tolerance_accuracy,
)


@pytest.mark.parametrize(
    ("prediction", "truth", "correct"),
    [
        (100.0, 100.0, True),
        (100.14, 100.0, True),  # within 0.15 %
        (100.2, 100.0, False),  # outside 0.15 %
        (0.05, 5.0, True),  # fraction vs percent (x100), smaller <= larger/50
        (5.0, 0.05, True),
        (0.0123, 12.3, True),  # thousands (power of ten)
        (12.31, 0.01231, True),
        (3.0, 300.02, True),  # x100 within 0.15 % of the larger, 3 <= 300/50
        (3.0, 320.0, False),
        (1.0, 100001.0, True),  # x100,000 within tolerance, 1 <= 100001/50,000
        (-5.0, 5.0, True),  # magnitude rules ignore the sign (the benchmark's quirk)
        (-5.2, 5.0, False),
        (1.2341, 1.2345, True),  # equal after rounding magnitudes up to 3 decimals
        (1.2341, 1.2371, False),
        (0.0, 0.0, True),
        (0.0004, 0.0001, True),  # both round up to 0.001
        ("abc", 5.0, False),
        (None, 5.0, False),
        (math.nan, 5.0, False),
        (math.inf, 5.0, False),
    ],
)
def test_financemath_rule(prediction: object, truth: float, correct: bool) -> None:
    assert financemath_correct(prediction, truth) is correct


def test_tolerance_accuracy_counts_hits() -> None:
    assert tolerance_accuracy([1.0, 2.0, 50.0, 7.0], [1.0, 2.5, 0.5, 7.0]) == 0.75
    assert math.isnan(tolerance_accuracy([], []))


def test_regression_metrics_values() -> None:
    out = regression_metrics([1.0, 2.0, 13.0], [1.0, 4.0, 10.0])
    assert out["n"] == 3
    assert out["mae"] == pytest.approx(5 / 3)
    assert out["rmse"] == pytest.approx(math.sqrt(13 / 3))
    assert out["median_ae"] == 2
    expected_log = np.mean(np.abs(signed_log1p([1, 2, 13]) - signed_log1p([1, 4, 10])))
    assert out["log_mae"] == pytest.approx(expected_log)
    assert out["accuracy"] == pytest.approx(1 / 3)


def test_signed_log1p_round_trips_and_keeps_sign() -> None:
    values = np.array([-5e5, -16.0, -0.5, 0.0, 0.5, 16.0, 5e6])
    np.testing.assert_allclose(signed_expm1(signed_log1p(values)), values, rtol=1e-12)
    assert np.all(np.sign(signed_log1p(values)) == np.sign(values))
    np.testing.assert_allclose(inverse(forward(values, "none"), "none"), values)
    assert np.isfinite(signed_expm1(np.array([1e6]))).all()
