"""Evaluation: score a model on its own run's holdout rows against baselines; promotion on paired
intervals; the evaluation report (repeated nested CV) that writes the model card."""
