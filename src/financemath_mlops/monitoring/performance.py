"""The performance report: the model's errors on labelled data now vs at training time.

Labelled data is a FinanceMath file with ground truth (a newly labelled batch, the validation
split) or, by default, the holdout records the model's own run kept (rows it never trained on).
Predictions go through the logged pyfunc, the same path as serving. Evidently's regression report
gives the page (error distribution, predicted vs actual); our own metrics give the numbers that
compare with the run's ``holdout_*`` and ``cv_*_mean`` metrics (log-MAE, tolerance accuracy).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops.monitoring.inputs import ModelContext, labelled_records, require_rows
from financemath_mlops.monitoring.publish import write_report_files

log = logging.getLogger(__name__)

COMPARED = ("mae", "rmse", "median_ae", "log_mae", "accuracy")


@dataclass
class PerformanceOutcome:
    model: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, float]  # ours: n, mae, rmse, median_ae, log_mae, accuracy
    evidently_metrics: dict[str, float]
    training: dict[str, dict[str, float]]  # {"holdout": {...}, "cv": {...}} from the run
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    evidently: Any = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "performance",
            "created_at": self.created_at,
            "model": self.model,
            "data": self.data,
            "metrics": self.metrics,
            "evidently_metrics": self.evidently_metrics,
            "training": self.training,
            "evidently": self.evidently.raw() if self.evidently is not None else None,
        }

    def console(self) -> str:
        holdout, cv = self.training.get("holdout", {}), self.training.get("cv", {})
        lines = [
            f"performance of {self.model['uri']} (version {self.model.get('version')}) on "
            f"{self.data['rows']} labelled rows of {self.data['source']}",
            f"  {'metric':<12}{'now':>14}{'training holdout':>18}{'training CV':>14}",
        ]
        for name in COMPARED:
            lines.append(
                f"  {name:<12}{_fmt(self.metrics.get(name)):>14}{_fmt(holdout.get(name)):>18}"
                f"{_fmt(cv.get(name)):>14}"
            )
        extra = ", ".join(
            f"{k} {_fmt(self.evidently_metrics.get(k))}" for k in ("mean_error", "r2")
        )
        lines.append(f"  Evidently: {extra}")
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"


def load_labelled(model: ModelContext, data: Path | None, work: Path) -> tuple[list, str]:
    """Labelled records from ``data``, or the model run's holdout records."""
    if data is not None:
        from financemath_mlops.ingestion.sources import SourceError, read_local_file
        from financemath_mlops.monitoring.inputs import MonitoringError

        try:
            rows = read_local_file(Path(data))
        except SourceError as exc:
            raise MonitoringError(str(exc)) from None
        return labelled_records(rows, str(data)), str(data)
    from financemath_mlops import runs

    rows = runs.load_holdout_records(model.ref.run_id, work)
    where = f"the holdout records of run {model.ref.run_id}"
    return labelled_records(rows, where), where


def training_metrics(run_metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """The run's holdout_* (from evaluation) and cv_*_mean (from training) metrics."""
    holdout = {
        k.removeprefix("holdout_"): v for k, v in run_metrics.items() if k.startswith("holdout_")
    }
    cv = {
        k.removeprefix("cv_").removesuffix("_mean"): v
        for k, v in run_metrics.items()
        if k.startswith("cv_") and k.endswith("_mean")
    }
    return {"holdout": holdout, "cv": cv}


def assess(model: ModelContext, data: Path | None, work: Path, min_rows: int) -> PerformanceOutcome:
    """Predict the labelled records with the model and build the report; fewer than
    ``min_rows`` labelled records are refused before any prediction (monitoring.min_rows)."""
    import pandas as pd

    from financemath_mlops import runs
    from financemath_mlops.monitoring.evidently_adapter import regression_report
    from financemath_mlops.scoring import regression_metrics

    records, where = load_labelled(model, data, work)
    more = "pass a larger labelled file with --data" if data else "pass a labelled file with --data"
    require_rows({"labelled": len(records)}, min_rows, where, more)
    predictions = runs.predict_records(model.ref.uri, records)
    truths = np.array([float(r["ground_truth"]) for r in records])
    frame = pd.DataFrame({"target": truths, "prediction": predictions})
    evidently = regression_report(frame)
    ours = regression_metrics(predictions, truths)
    return PerformanceOutcome(
        model=model.identity(),
        data={"source": where, "rows": len(records)},
        metrics=ours,
        evidently_metrics=evidently.metrics,
        training=training_metrics(runs.run_metrics(model.ref.run_id)),
        evidently=evidently,
    )


def write_performance_report(outcome: PerformanceOutcome, output: Path) -> dict[str, Path]:
    return write_report_files(output, "performance", outcome.evidently, outcome.to_json())
