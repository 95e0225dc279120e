"""The models that try to land an answer within tolerance, run for the evaluation report.

Two models beside the regressor (issue 16), both scored on the report's seeds and outer folds and
both falling back to (or starting from) the nested regressor's out-of-fold predictions:

* ``ranker``: a candidate answer built from the question's numbers (:mod:`.ranker_cv`);
* ``sign_scale``: the regressor's estimate placed in a predicted sign/magnitude band
  (:mod:`.sign_scale_cv`).

Also the per-row chance control (one number of another question), so an accuracy can be compared
with it on the same rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from financemath_mlops.evaluation import candidates
from financemath_mlops.evaluation.baselines import chance_row_hits
from financemath_mlops.evaluation.nested import CVData
from financemath_mlops.evaluation.ranker_cv import RankerData, repeated_ranker_cv
from financemath_mlops.evaluation.sign_scale_cv import repeated_sign_scale_cv

NAMES = ("ranker", "sign_scale")
CHANCE_DRAWS = 20


def caps() -> dict[str, int]:
    return {
        "question_chars": candidates.MAX_QUESTION_CHARS,
        "scanned_numbers": candidates.MAX_SCANNED,
        "operands": candidates.MAX_OPERANDS,
        "operations": len(candidates.PAIR_OPERATIONS),
        "candidates": candidates.MAX_CANDIDATES,
    }


def answer_models(
    records: list[dict[str, Any]],
    data: CVData,
    lgb_settings: dict[str, dict[str, Any]],
    regressor: np.ndarray,
    numbers: list[list[float]],
    folds: int,
    seeds: int,
    inner_folds: int,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Out-of-fold predictions (seeds, n) of both models, the chance control's per-row miss rate,
    and what the card says about them (coverage, caps, thresholds, band accuracy)."""
    rdata = RankerData.from_records(records)
    ranked = repeated_ranker_cv(
        rdata, data, lgb_settings, regressor, folds, seeds, inner_folds, jobs, progress=progress
    )
    placed = repeated_sign_scale_cv(data, regressor, folds, seeds)
    one, _ = chance_row_hits(numbers, data.target, CHANCE_DRAWS)
    thresholds = Counter(f"{t:.2f}" for t in ranked["thresholds"])
    return {
        "predictions": {
            "ranker": ranked["predictions"]["ranker"],
            "sign_scale": placed["predictions"],
        },
        "chance_miss": 1 - one / CHANCE_DRAWS,
        "coverage": rdata.coverage(data.target),
        "caps": caps(),
        "answered_share": float(ranked["answered"].mean()),
        "thresholds": dict(sorted(thresholds.items())),
        "band_accuracy": placed["band_accuracy"],
    }
