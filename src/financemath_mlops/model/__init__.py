"""The trained model as a thing that predicts from raw records: booster + embedder + feature config.

Shared by training (which logs it), evaluation, batch prediction and serving (which load it).
Nothing here imports torch, sentence-transformers, Prefect or Evidently.
"""
