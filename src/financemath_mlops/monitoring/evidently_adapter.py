"""Our one adapter around Evidently (0.7): drift and regression reports with plain results.

Evidently's API changed completely between 0.4 and 0.7 (``Report(metrics=[...])`` and
``ColumnMapping`` became ``Report([...])``, ``Dataset.from_pandas`` and ``DataDefinition``; results
moved from ``report.as_dict()`` to the snapshot returned by ``report.run``). Every call the project
makes to it is here, pinned by ``tests/unit/test_monitoring_evidently.py``, so an upgrade touches
this file only. Callers get dataclasses of floats and a way to save the HTML, never Evidently
objects.

Per-column drift decisions are Evidently's own (its test status), so the direction of each
method's score (p-value: drift when small; distance: drift when large) is never re-implemented
here. Columns are tested with Evidently's defaults: for up to 1000 reference rows, K-S (numerical)
and chi-squared / Z-test (categorical) with p < 0.05; above, Wasserstein / Jensen-Shannon
distance >= 0.1.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_VALUES = 5  # a column needs this many non-missing values on each side to be tested


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    kind: str  # "num" or "cat"
    method: str
    score: float
    threshold: float
    detected: bool


class _Snapshot:
    """What both results offer from the Evidently snapshot they hold (``self.snapshot``)."""

    snapshot: Any

    def save_html(self, path: Path) -> None:
        self.snapshot.save_html(str(path))

    def raw(self) -> dict[str, Any]:
        """Evidently's own JSON view of the report (metrics and tests)."""
        return _json_safe(self.snapshot.dict())


@dataclass
class DriftResult(_Snapshot):
    """Drift per column; ``snapshot`` saves the HTML and the raw JSON.

    The verdict for the whole table (share of drifted columns against a threshold) is
    :class:`~financemath_mlops.monitoring.drift.DriftOutcome`'s, not repeated here.
    """

    columns: list[ColumnDrift]
    skipped: dict[str, str]
    snapshot: Any = field(repr=False, default=None)


@dataclass
class RegressionResult(_Snapshot):
    """Evidently's regression metrics (``mae``, ``rmse``, ``mean_error``, ``r2``, ...)."""

    metrics: dict[str, float]
    snapshot: Any = field(repr=False, default=None)


def testable_columns(reference: Any, current: Any, columns: Sequence[str]) -> dict[str, str]:
    """Columns Evidently cannot test (too few values on one side), with the reason."""
    skipped = {}
    for name in columns:
        for side, frame in (("reference", reference), ("current", current)):
            values = int(frame[name].notna().sum()) if name in frame else 0
            if values < MIN_VALUES:
                skipped[name] = f"{values} non-missing values in the {side} data (< {MIN_VALUES})"
                break
    return skipped


def drift_report(
    reference: Any,
    current: Any,
    numerical: Sequence[str],
    categorical: Sequence[str] = (),
    drift_share: float = 0.5,
    num_method: str | None = None,
) -> DriftResult:
    """Evidently's ``DataDriftPreset`` on the given columns of two DataFrames.

    ``num_method`` pins the test for numerical columns (an Evidently stattest name such as
    ``ks`` or ``wasserstein``); None lets Evidently choose, which for a numerical column with
    few distinct values means chi-squared, where one value unseen in the reference reads as drift.

    Columns with fewer than :data:`MIN_VALUES` values on either side are not tested (Evidently
    refuses empty columns) and are listed in ``skipped``.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    skipped = testable_columns(reference, current, [*numerical, *categorical])
    num = [c for c in numerical if c not in skipped]
    cat = [c for c in categorical if c not in skipped]
    if not num and not cat:
        raise ValueError(f"no column can be tested for drift: {skipped}")
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    keep = [*num, *cat]
    preset = DataDriftPreset(columns=keep, drift_share=drift_share, num_method=num_method)
    report = Report([preset], include_tests=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = report.run(
            Dataset.from_pandas(current[keep].reset_index(drop=True), data_definition=definition),
            Dataset.from_pandas(reference[keep].reset_index(drop=True), data_definition=definition),
        )
    raw = snapshot.dict()
    failed = {
        test["metric_config"]["metric_id"]
        for test in raw.get("tests", [])
        if _status(test.get("status")) == "FAIL"
    }
    results = []
    for metric in raw["metrics"]:
        config = metric.get("config", {})
        if not str(config.get("type", "")).endswith(":ValueDrift"):
            continue
        name = config["column"]
        results.append(
            ColumnDrift(
                column=name,
                kind="cat" if name in cat else "num",
                method=_display_method(config.get("method"), name in cat),
                score=float(metric["value"]),
                threshold=float(config.get("threshold")),
                detected=metric["id"] in failed,
            )
        )
    order = {name: i for i, name in enumerate(keep)}
    results.sort(key=lambda c: order.get(c.column, len(order)))
    return DriftResult(results, skipped, snapshot)


def regression_report(
    frame: Any, target: str = "target", prediction: str = "prediction"
) -> RegressionResult:
    """Evidently's ``RegressionPreset`` (MAE, RMSE, mean error, R2, MAPE, max error, plots)."""
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import RegressionPreset

    definition = DataDefinition(
        numerical_columns=[target, prediction],
        regression=[Regression(target=target, prediction=prediction)],
    )
    data = frame[[target, prediction]].reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        snapshot = Report([RegressionPreset()], include_tests=False).run(
            Dataset.from_pandas(data, data_definition=definition), None
        )
    names = {
        "MAE": "mae", "RMSE": "rmse", "MeanError": "mean_error", "R2Score": "r2",
        "MAPE": "mape", "AbsMaxError": "abs_max_error",
    }  # fmt: skip
    metrics: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        kind = str(metric.get("config", {}).get("type", "")).rsplit(":", 1)[-1]
        if kind not in names:
            continue
        value = metric["value"]
        if isinstance(value, dict):  # mean/std metrics: keep both
            metrics[names[kind]] = _float(value.get("mean"))
            metrics[names[kind] + "_std"] = _float(value.get("std"))
        else:
            metrics[names[kind]] = _float(value)
    return RegressionResult(metrics, snapshot)


def _display_method(method: Any, categorical: bool) -> str:
    """Evidently's display name of a stattest ('ks' -> 'K-S p_value'); the name if unknown."""
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    kind = ColumnType.Categorical if categorical else ColumnType.Numerical
    try:
        return str(get_registered_stattest(str(method), kind).display_name)
    except (ValueError, TypeError):
        return str(method)


def _status(value: Any) -> str:
    return str(getattr(value, "value", value)).rsplit(".", 1)[-1].upper()


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _json_safe(value: Any) -> Any:
    """Plain JSON (no NaN/inf, no enums) of Evidently's dicts."""
    return json.loads(json.dumps(value, default=str), parse_constant=lambda _: None)
