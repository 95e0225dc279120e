"""Target transforms: FinanceMath answers span -5e5..5e6 with a median near 16."""

from __future__ import annotations

from typing import Literal

import numpy as np

TargetTransform = Literal["signed_log1p", "none"]


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """sign(x) * log1p(|x|): compresses the heavy tail symmetrically, keeps sign and zero."""
    values = np.asarray(values, dtype=np.float64)
    return np.sign(values) * np.log1p(np.abs(values))


def signed_expm1(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`signed_log1p`."""
    values = np.asarray(values, dtype=np.float64)
    # Clip so a wild tree output cannot overflow to inf (exp(709) is the float64 limit).
    return np.sign(values) * np.expm1(np.minimum(np.abs(values), 700.0))


def forward(values: np.ndarray, transform: TargetTransform) -> np.ndarray:
    return signed_log1p(values) if transform == "signed_log1p" else np.asarray(values, float)


def inverse(values: np.ndarray, transform: TargetTransform) -> np.ndarray:
    return signed_expm1(values) if transform == "signed_log1p" else np.asarray(values, float)
