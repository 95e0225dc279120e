"""Prediction churn: how far two models' predictions sit apart, and the int8 rule built on it.

Retraining alone moves predictions (LightGBM bagging and feature sampling, other outer folds), so
"int8 embeddings change nothing that matters" is judged against that: the churn int8 adds on the
same seed and folds (precision churn) must not exceed the churn of one retrain (fp32 seed s vs
seed s+1) by ``MARGIN`` or more. Churn needs no labels, so it is measured on every FinanceMath
question; the labelled rows add each pair's loss difference.

``MARGIN`` was stated (and committed) before the measurement was run; changing it after seeing
the figures would make the rule meaningless.
"""

from __future__ import annotations

# Precision churn minus retrain churn, on the signed-log1p scale (mean |slog(a) - slog(b)| per
# row): int8 may move a prediction by at most about 2 % more than a retrain does on average.
MARGIN = 0.02
