"""Paired bootstrap intervals: is model A better than B on the same rows, beyond resampling noise?

Rows are the resampling unit: one set of resampled row indices is applied to both models' per-row
losses, so the interval is for the difference on the same questions (paired), which is much
tighter than comparing two separate intervals. Pure numpy; deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Statistic = Literal["mean", "median"]
MAX_BOOTSTRAP_CELLS = 50_000_000  # samples x rows: bounds memory (~400 MB of int64 indices)


@dataclass(frozen=True)
class PairedDifference:
    """statistic(a) - statistic(b) on n paired rows, with a percentile bootstrap interval."""

    n: int
    difference: float
    low: float
    high: float
    confidence: float

    def favours_a(self, margin: float = 0.0) -> bool:
        """True when the whole interval says A's loss is lower than B's by more than ``margin``."""
        return self.high < -margin

    def text(self, digits: int = 2) -> str:
        return f"{self.difference:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def as_dict(self) -> dict[str, float]:
        return asdict(self)  # n, difference, low, high, confidence: the fields, in order


def paired_bootstrap(
    loss_a: np.ndarray,
    loss_b: np.ndarray,
    samples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    statistic: Statistic = "mean",
) -> PairedDifference:
    """Difference statistic(loss_a) - statistic(loss_b) with a paired percentile interval.

    Negative means A's loss is lower. ``statistic="mean"`` suits per-row log errors and 0/1 misses;
    ``"median"`` gives the difference of median absolute errors.
    """
    a = np.asarray(loss_a, dtype=np.float64)
    b = np.asarray(loss_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired losses must be 1-d arrays of one shape, got {a.shape}, {b.shape}")
    if a.size == 0:
        raise ValueError("no rows to compare")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    samples = int(min(samples, max(1, MAX_BOOTSTRAP_CELLS // a.size)))
    reduce = np.mean if statistic == "mean" else np.median
    difference = float(reduce(a) - reduce(b))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(samples, a.size))
    boot = reduce(a[idx], axis=1) - reduce(b[idx], axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(boot, [tail, 100 - tail])
    return PairedDifference(int(a.size), difference, float(low), float(high), confidence)
