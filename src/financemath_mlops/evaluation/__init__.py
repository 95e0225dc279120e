"""Evaluation: score a model on its own run's holdout rows, against baselines; promotion."""
