"""Monitoring: the prediction log, drift and performance reports, and their Prometheus metrics.

Modules (each small, each importable alone):

- :mod:`.prediction_log`: the service's append-only Parquet log of predictions (background writer).
- :mod:`.evidently_adapter`: the only module that imports Evidently (0.7 API).
- :mod:`.embedding_drift`: a drift signal for the 384-dim embeddings (PCA + permutation test).
- :mod:`.inputs`: feature tables, FinanceMath files or the prediction log -> one feature frame.
- :mod:`.drift` and :mod:`.performance`: the two reports; :mod:`.run` runs them end to end for
  ``__main__``; :mod:`.publish` shares their numbers (``reports/latest.json``, MLflow);
  :mod:`.metrics` turns them and the log's counts into Prometheus metrics.

Importing this package imports nothing heavy: the service uses the log and the metrics without
pulling in Evidently, MLflow or pandas.
"""
