"""Predict raw FinanceMath records with a logged model: the one "load URI X, predict these" path.

Evaluation, promotion, the performance report and batch prediction all score records this way;
our own pyfunc is asked through its :class:`Predictor` (the object serving uses, with per-row
warnings), any other pyfunc through MLflow's ``predict`` on a question/tables/topic frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from financemath_mlops.runs.store import load_pyfunc


class RecordPredictions(NamedTuple):
    values: list[float]  # one per record, in order (may be non-finite: callers decide)
    warnings: list[list[str]]  # per record; fresh lists the caller may append to


class RecordModel:
    """A loaded pyfunc; for our own models also its Predictor (optionally with fewer threads)."""

    def __init__(self, pyfunc: Any, threads: int | None = None) -> None:
        self.pyfunc = pyfunc
        try:
            inner = pyfunc.unwrap_python_model()
        except Exception:  # a pyfunc of another flavour: predict through MLflow only
            inner = None
        predictor = getattr(inner, "predictor", None)
        if predictor is not None and threads is not None:
            from financemath_mlops.model.predictor import with_threads

            predictor = with_threads(predictor, threads)
        self.predictor = predictor

    def predict(self, records: Sequence[Mapping[str, Any]]) -> RecordPredictions:
        """Records need question, tables and topic (validated FinanceMath records)."""
        if not records:
            return RecordPredictions([], [])
        if self.predictor is not None:
            from financemath_mlops.records import RecordInput

            prediction = self.predictor.predict([RecordInput.from_mapping(r) for r in records])
            return RecordPredictions(
                [float(v) for v in prediction.values], [list(w) for w in prediction.warnings]
            )
        from financemath_mlops.model.packaging import input_example

        frame = self.pyfunc.predict(input_example(list(records)))
        return RecordPredictions([float(v) for v in frame["prediction"]], [[] for _ in records])

    def values(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return np.asarray(self.predict(records).values, dtype=np.float64)


def load_model(uri: str, threads: int | None = None) -> RecordModel:
    """Load a model by URI (models:/, runs:/ or a model folder); the store must be configured."""
    return RecordModel(load_pyfunc(uri), threads)


def predict_records(model_uri: str, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Predictions for raw records with the model at ``model_uri`` (loaded for this call)."""
    return load_model(model_uri).values(records)
