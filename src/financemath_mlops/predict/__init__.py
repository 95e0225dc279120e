"""Batch prediction over a FinanceMath file with a registered model, locally or on Dask."""

from financemath_mlops.predict.batch import BatchSummary, PredictError, predict_file

__all__ = ["BatchSummary", "PredictError", "predict_file"]
