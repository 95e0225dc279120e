"""The sign/scale model (:mod:`financemath_mlops.evaluation.sign_scale`) on the report's outer folds.

Same seeds and outer folds as :func:`.nested.repeated_nested_cv`. The model has nothing to choose
(fixed features: the hand-built ones and 16 PCA components of the embeddings, fitted per fold;
fixed classifier settings), so no inner CV; it places the nested regressor's out-of-fold estimate
into the band it predicts.
"""

from __future__ import annotations

import numpy as np

from financemath_mlops.evaluation.nested import Candidate, CVData, design, outer_fold_tasks
from financemath_mlops.evaluation.sign_scale import band_of, fit_sign_scale, predict_sign_scale

FEATURES = Candidate("pca", False, "configured")


def repeated_sign_scale_cv(
    data: CVData, estimates: np.ndarray, folds: int = 5, seeds: int = 5
) -> dict[str, np.ndarray | float]:
    """Out-of-fold answers, shape (seeds, n), and how often the predicted band was the truth's."""
    out = np.full_like(estimates, np.nan, dtype=np.float64)
    band_hits = []
    for seed, train_idx, valid_idx in outer_fold_tasks(data, folds, seeds):
        x_train, x_valid = design(FEATURES, data, train_idx, valid_idx)
        fitted = fit_sign_scale(x_train, data.target[train_idx], seed)
        answers, _ = predict_sign_scale(fitted, x_valid, estimates[seed, valid_idx])
        out[seed, valid_idx] = answers
        band_hits.append(band_of(answers) == band_of(data.target[valid_idx]))
    return {"predictions": out, "band_accuracy": float(np.concatenate(band_hits).mean())}
