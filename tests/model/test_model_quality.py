"""Model tier: the model learns something, honestly, and reproducibly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from financemath_mlops import runs
from financemath_mlops.features.build import (
    ID_COLUMN,
    TARGET_COLUMN,
    TOPIC_COLUMN,
    feature_values,
    read_features,
)
from financemath_mlops.training.fit import cross_validate, fit_booster
from financemath_mlops.training.split import holdout_split
from tests.conftest import TrainedModel

pytestmark = pytest.mark.integration


def test_model_beats_the_global_median_on_holdout_log_mae(trained_model: TrainedModel) -> None:
    report = json.loads(trained_model.metrics_path.read_text())
    model = report["holdout"]["log_mae"]
    baseline = report["baselines"]["global_median"]["log_mae"]
    assert model < 0.8 * baseline, (model, baseline)
    assert model < report["baselines"]["topic_median"]["log_mae"]


def test_same_seed_gives_same_split_cv_metrics_and_predictions(
    trained_model: TrainedModel,
) -> None:
    frame, _ = read_features(trained_model.features_path)
    cfg = trained_model.settings.training
    ids = frame[ID_COLUMN].tolist()
    topics = frame[TOPIC_COLUMN].tolist()
    assert holdout_split(ids, topics, 0.2, 5) == holdout_split(ids, topics, 0.2, 5)
    x, y = feature_values(frame), frame[TARGET_COLUMN].to_numpy()
    params = {**cfg.lightgbm, "n_estimators": 60}
    first = cross_validate(x, y, params, "signed_log1p", 3, seed=9, threads=1)
    second = cross_validate(x, y, params, "signed_log1p", 3, seed=9, threads=1)
    assert first == second
    a = fit_booster(x, y, params, "signed_log1p", seed=9, threads=1).predict(x[:20])
    b = fit_booster(x, y, params, "signed_log1p", seed=9, threads=1).predict(x[:20])
    np.testing.assert_array_equal(a, b)


def test_holdout_rows_never_reach_the_training_table(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    runs.configure(trained_model.settings.mlflow)
    _, holdout = runs.load_split_ids(trained_model.run_id, tmp_path)
    train_table = runs.load_training_features(trained_model.run_id, tmp_path)
    assert holdout
    assert not set(holdout) & set(train_table[ID_COLUMN])
