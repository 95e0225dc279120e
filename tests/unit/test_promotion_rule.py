"""Promotion on evidence: a point estimate alone never promotes; config cannot go below 10 rows."""

from __future__ import annotations

import numpy as np
import pytest

from financemath_mlops.config import ConfigError, load_settings
from financemath_mlops.promotion.decision import judge, row_losses
from tests.helpers import REPO_ROOT

DEFAULT = REPO_ROOT / "configs" / "default.yaml"


def section_and_seed(settings):
    """What the rule reads: the evaluation section and the training seed."""
    return settings.evaluation, settings.training.seed


def _truths_and_champion(n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    truths = rng.uniform(1, 1000, n)
    return truths, truths * rng.uniform(0.2, 5, n)


def test_a_clearly_better_challenger_is_promoted_with_its_interval() -> None:
    truths, champion = _truths_and_champion()
    challenger = truths * 1.01
    wins, interval, text = judge(
        challenger, champion, truths, *section_and_seed(load_settings(DEFAULT, {}))
    )
    assert wins and interval.n == 60 and interval.high < 0
    assert "entirely in its favour" in text and "on 60 rows" in text


def test_a_better_point_estimate_inside_the_noise_is_not_promoted() -> None:
    truths, champion = _truths_and_champion()
    rng = np.random.default_rng(5)
    # Slightly better on average, but the interval straddles zero.
    challenger = champion * np.exp(rng.normal(0, 0.3, len(truths)))
    challenger[:3] = truths[:3]
    wins, interval, text = judge(
        challenger, champion, truths, *section_and_seed(load_settings(DEFAULT, {}))
    )
    assert not wins and interval.low < 0 < interval.high
    assert "not entirely in its favour" in text


def test_a_margin_larger_than_the_gain_blocks_promotion() -> None:
    truths, champion = _truths_and_champion()
    settings = load_settings(DEFAULT, {"evaluation": {"promotion_margin": 5.0}})
    wins, interval, text = judge(truths * 1.01, champion, truths, *section_and_seed(settings))
    assert interval.high < 0 and not wins and "margin 5" in text


def test_row_losses_follow_the_metric() -> None:
    truths = np.array([1.0, 10.0])
    preds = np.array([2.0, 8.0])
    assert row_losses(preds, truths, "mae").tolist() == [1.0, 2.0]
    assert row_losses(preds, truths, "rmse").tolist() == [1.0, 4.0]
    assert row_losses(preds, truths, "log_mae")[0] == pytest.approx(np.log(3) - np.log(2))


@pytest.mark.parametrize("rows", [1, 9])
def test_config_cannot_set_the_minimum_rows_below_ten(rows: int) -> None:
    with pytest.raises(ConfigError, match="min_promotion_rows"):
        load_settings(DEFAULT, {"evaluation": {"min_promotion_rows": rows}})
