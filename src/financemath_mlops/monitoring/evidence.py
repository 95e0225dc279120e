"""When a report is evidence for retraining: drift or degraded performance on enough rows.

Pure functions over the numbers a report publishes (the ``latest.json`` sections), so the
monitoring flow, the tests and the alert rules' thresholds (monitoring/prometheus/alerts.yml:
same ``min_rows``, same ratio) agree on one definition. Each answer carries the reason either way,
so a run that does not ask for retraining says why not.

:func:`row_shortfall` is the one row count both the reports and the verdicts use: ``run_drift``
and ``run_performance`` refuse a report below ``monitoring.min_rows`` (the command exits 2, the
scheduled flow logs the skip), and a verdict on numbers below it is never evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    kind: str  # "drift" | "performance"
    retrain: bool
    reason: str
    numbers: Mapping[str, Any] = field(default_factory=dict)


def row_shortfall(counts: Mapping[str, int], min_rows: int) -> str | None:
    """Why rows this few are no evidence either way (``only 6 current rows (< 30)``), or None.

    ``counts`` names each side a report reads, e.g. ``{"reference": 240, "current": 6}`` for
    drift or ``{"labelled": 12}`` for performance; every side must reach ``min_rows``: a drift
    test against a handful of reference rows says as little as one on a handful of current ones.
    """
    short = [f"{int(rows)} {side} rows" for side, rows in counts.items() if int(rows) < min_rows]
    return f"only {' and '.join(short)} (< {min_rows})" if short else None


def drift_verdict(numbers: Mapping[str, Any], min_rows: int) -> Verdict:
    """Dataset drift in a window of at least ``min_rows`` predictions."""
    rows = int(numbers.get("current_rows") or 0)
    share, threshold = numbers.get("share"), numbers.get("drift_share_threshold")
    shortfall = row_shortfall({"current": rows}, min_rows)
    if shortfall:
        return Verdict("drift", False, shortfall, numbers)
    if not numbers.get("dataset_drift"):
        return Verdict("drift", False, f"drift share {share} below {threshold}", numbers)
    return Verdict(
        "drift", True, f"{share:.0%} of columns drifted (threshold {threshold:.0%})", numbers
    )


def performance_verdict(numbers: Mapping[str, Any], ratio: float, min_rows: int) -> Verdict:
    """Log-MAE above ``ratio`` times the training holdout's, on at least ``min_rows`` rows."""
    rows = int(numbers.get("rows") or 0)
    now, then = numbers.get("log_mae"), numbers.get("training_log_mae")
    shortfall = row_shortfall({"labelled": rows}, min_rows)
    if shortfall:
        return Verdict("performance", False, shortfall, numbers)
    if not isinstance(now, int | float) or not isinstance(then, int | float) or then <= 0:
        return Verdict("performance", False, "no training-time log-MAE to compare with", numbers)
    if now <= ratio * then:
        return Verdict(
            "performance", False, f"log-MAE {now:.3f} within {ratio}x training's {then:.3f}",
            numbers,
        )  # fmt: skip
    return Verdict(
        "performance", True, f"log-MAE {now:.3f} > {ratio}x training's {then:.3f}", numbers
    )
