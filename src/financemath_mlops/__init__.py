"""financemath-mlops: an end-to-end MLOps pipeline for the FinanceMath benchmark."""

__version__ = "0.1.0"
