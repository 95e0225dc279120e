"""Baselines a sceptic asks for, beside every model figure (pure functions over arrays).

* global median and topic median of the training answers (:func:`median_baselines`);
* the median of the numbers written in the question and its tables (no parameters at all);
* for tolerance accuracy, a chance control: candidates taken from *another* question's numbers.
  FinanceMath's rule forgives sign, powers of ten and percent-vs-fraction, so unrelated numbers
  already hit some answers; a model's accuracy means little unless it beats this.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from financemath_mlops.features.rows import question_numbers
from financemath_mlops.scoring import financemath_correct, median_baselines
from financemath_mlops.tables import parse_tables

__all__ = [
    "chance_accuracy",
    "chance_row_hits",
    "median_baselines",
    "numbers_median",
    "record_numbers",
    "with_fallback",
]

MAX_NUMBERS = 500  # per record (real rows: at most 50); bounds the chance control


def record_numbers(question: str, tables: Sequence[str]) -> list[float]:
    """Finite numbers written in the question text and the numeric cells of its tables."""
    numbers = question_numbers(question)
    for table in parse_tables(list(tables)):
        numbers.extend(v for v in table.numeric_values if math.isfinite(v))
    return numbers[:MAX_NUMBERS]


def numbers_median(numbers: Sequence[Sequence[float]]) -> np.ndarray:
    """Per record, the median of its numbers; NaN when it has none."""
    return np.array([float(np.median(n)) if len(n) else math.nan for n in numbers])


def with_fallback(values: np.ndarray, fallback: float) -> np.ndarray:
    """``values`` with NaN replaced by ``fallback`` (e.g. the training rows' global median)."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(np.isfinite(values), values, fallback)


def chance_accuracy(
    numbers: Sequence[Sequence[float]], truths: np.ndarray, draws: int = 20, seed: int = 0
) -> dict[str, float]:
    """How often numbers from another, randomly chosen question count as correct.

    ``one_number``: one number drawn at random from another question (a single guess, comparable
    to a model's one prediction). ``any_number``: any of that question's numbers counts (the
    coverage the rule's forgiveness gives). ``own_any_number``: any of the question's *own*
    numbers counts (copying an input number, picked by an oracle). Averaged over ``draws``.
    """
    truths = np.asarray(truths, dtype=np.float64)
    n = len(truths)
    if n < 2:
        return {"one_number": math.nan, "any_number": math.nan, "own_any_number": math.nan}
    one, anyn = chance_row_hits(numbers, truths, draws, seed)
    own = sum(
        any(financemath_correct(v, t) for v in pool)
        for pool, t in zip(numbers, truths, strict=True)
    )
    return {
        "one_number": float(one.sum()) / (draws * n),
        "any_number": float(anyn.sum()) / (draws * n),
        "own_any_number": own / n,
    }


def chance_row_hits(
    numbers: Sequence[Sequence[float]], truths: np.ndarray, draws: int = 20, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, over ``draws``: hits of one number / any number of another question (see
    :func:`chance_accuracy`); per-row rates (divide by ``draws``) pair with a model's misses."""
    n = len(truths)
    rng = np.random.default_rng(seed)
    one, anyn = np.zeros(n), np.zeros(n)
    for _ in range(draws):
        others = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never the row itself
        for i, j in enumerate(others):
            pool = numbers[j]
            if not pool:
                continue
            one[i] += financemath_correct(pool[int(rng.integers(len(pool)))], truths[i])
            anyn[i] += any(financemath_correct(v, truths[i]) for v in pool)
    return one, anyn
