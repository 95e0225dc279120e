"""model/trees.py answers like ``lightgbm.Booster.predict``: serving can run without lightgbm.

Parity to 1e-6 relative (1e-12 absolute for scores near 0) on each model's own rows and on rows
made to break an evaluator: NaN, 0, +/-inf, values below LightGBM's zero threshold, and every split
threshold itself and its float neighbours. Models of every objective family the evaluator claims,
and the model the pipeline trains (the parity set: its feature table).
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from financemath_mlops.model.trees import TreeEnsemble, TreeModelError

RTOL, ATOL = 1e-6, 1e-12
ONE_THREAD = {"num_threads": 1, "verbose": -1}  # OpenMP spinning on a busy 2-core box: 10x slower


def _data(seed: int = 0, rows: int = 500, width: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width))
    x[:, 0] = rng.integers(0, 5, rows)  # ties: thresholds between small integers
    x[rng.random(rows) < 0.2, 1] = np.nan  # NaN-aware splits (missing type NaN)
    x[rng.random(rows) < 0.3, 2] = 0.0  # zeros (missing type Zero with zero_as_missing)
    x[rng.random(rows) < 0.1, 3] = np.inf
    y = 2 * x[:, 4] + np.nan_to_num(x[:, 1], nan=-1.0) + (x[:, 0] > 2) + (x[:, 2] == 0)
    return x, y + rng.normal(scale=0.1, size=rows)


def adversarial_rows(model: TreeEnsemble, base: np.ndarray) -> np.ndarray:
    """Rows of special values, and the base rows with each split's feature set to its threshold
    and to the next float either side of it."""
    width = base.shape[1]
    special = [np.full(width, v) for v in (np.nan, 0.0, -0.0, np.inf, -np.inf, 1e-40, -1e-40)]
    rng = np.random.default_rng(1)
    mixed = base[rng.integers(0, len(base), 64)].copy()
    mask = rng.random(mixed.shape)
    mixed[mask < 0.1] = np.nan
    mixed[(mask >= 0.1) & (mask < 0.2)] = 0.0
    mixed[(mask >= 0.2) & (mask < 0.25)] = np.inf
    mixed[(mask >= 0.25) & (mask < 0.3)] = -np.inf
    features, thresholds = model.splits
    at = np.repeat(base[rng.integers(0, len(base), len(features))], 3, axis=0)
    values = np.stack(
        [thresholds, np.nextafter(thresholds, -np.inf), np.nextafter(thresholds, np.inf)], axis=1
    ).reshape(-1)
    at[np.arange(len(at)), np.repeat(features, 3)] = values
    return np.vstack([np.array(special), mixed, at])


def assert_same_as_lightgbm(booster: lgb.Booster, x: np.ndarray, tmp_path: Path) -> None:
    path = tmp_path / "booster.txt"
    booster.save_model(str(path))
    ours = TreeEnsemble.from_file(path)
    reference = lgb.Booster(model_file=str(path))  # what serving loaded before
    rows = np.vstack([x, adversarial_rows(ours, x)])
    for raw in (True, False):
        np.testing.assert_allclose(
            ours.predict(rows, raw_score=raw),
            reference.predict(rows, raw_score=raw, num_threads=1),
            rtol=RTOL,
            atol=ATOL,
            err_msg=f"raw_score={raw}",
        )


CASES = {
    "regression_l1 (ours)": {"objective": "regression_l1"},
    "regression, zero as missing": {"objective": "regression", "zero_as_missing": True},
    "regression, no missing handling": {"objective": "regression", "use_missing": False},
    "regression, sqrt": {"objective": "regression", "reg_sqrt": True},
    "huber": {"objective": "huber"},
    "quantile": {"objective": "quantile", "alpha": 0.7},
    "random forest": {
        "boosting": "rf", "bagging_freq": 1, "bagging_fraction": 0.7, "feature_fraction": 0.8,
    },
    "dart": {"boosting": "dart", "drop_rate": 0.3},
}  # fmt: skip


@pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
def test_regressors_match_lightgbm(params: dict, tmp_path: Path):
    x, y = _data()
    booster = lgb.train(
        {"num_leaves": 15, "min_data_in_leaf": 5, "seed": 3, **ONE_THREAD, **params},
        lgb.Dataset(x, y),
        num_boost_round=40,
    )
    assert_same_as_lightgbm(booster, x, tmp_path)


def test_positive_targets_with_a_log_link_match_lightgbm(tmp_path: Path):
    x, y = _data()
    for objective in ("poisson", "gamma", "tweedie"):
        booster = lgb.train(
            {"objective": objective, "num_leaves": 7, **ONE_THREAD},
            lgb.Dataset(x, np.exp(y / 4)),
            num_boost_round=30,
        )
        assert_same_as_lightgbm(booster, x, tmp_path)


def test_classifiers_and_rankers_match_lightgbm(tmp_path: Path):
    x, y = _data()
    label = (y > np.median(y)).astype(int)
    classes = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    common = {"num_leaves": 7, "min_data_in_leaf": 5, **ONE_THREAD}
    models = [
        lgb.train({**common, "objective": "binary"}, lgb.Dataset(x, label), 30),
        lgb.train({**common, "objective": "cross_entropy"}, lgb.Dataset(x, label), 30),
        lgb.train(
            {**common, "objective": "multiclass", "num_class": 3}, lgb.Dataset(x, classes), 20
        ),
        lgb.train(
            {**common, "objective": "multiclassova", "num_class": 3}, lgb.Dataset(x, classes), 20
        ),
        lgb.train(
            {**common, "objective": "lambdarank"},
            lgb.Dataset(x, classes, group=[50] * (len(x) // 50)),
            20,
        ),
    ]
    for booster in models:
        assert_same_as_lightgbm(booster, x, tmp_path)


def test_the_trained_pipeline_model_matches_lightgbm_on_its_feature_table(
    trained_model, tmp_path: Path
):
    """The parity set: every row of the feature table the served model was trained on."""
    import pandas as pd

    from financemath_mlops.features.rows import FEATURE_COLUMNS

    logged = sorted(trained_model.workdir.rglob("booster.txt"))  # the logged model's artefact
    assert logged, f"no booster.txt under {trained_model.workdir}"
    booster = lgb.Booster(model_file=str(logged[0]))
    x = pd.read_parquet(trained_model.features_path)[list(FEATURE_COLUMNS)].to_numpy(np.float64)
    assert_same_as_lightgbm(booster, x, tmp_path)


def test_models_it_cannot_evaluate_are_refused_with_the_reason(tmp_path: Path):
    x, y = _data()
    x[:, 0] = np.abs(x[:, 0])
    categorical = lgb.train(
        {"num_leaves": 7, "min_data_per_group": 5, "cat_smooth": 1, **ONE_THREAD},
        lgb.Dataset(x, y, categorical_feature=[0]),
        10,
    )
    with pytest.raises(TreeModelError, match="categorical"):
        TreeEnsemble(categorical.model_to_string())
    linear = lgb.train({"num_leaves": 7, "linear_tree": True, **ONE_THREAD}, lgb.Dataset(x, y), 5)
    with pytest.raises(TreeModelError, match="linear"):
        TreeEnsemble(linear.model_to_string())
    with pytest.raises(TreeModelError, match="not a LightGBM text model"):
        TreeEnsemble("{}")
    text = lgb.train(ONE_THREAD, lgb.Dataset(x, y), 3).model_to_string()
    with pytest.raises(TreeModelError, match="objective 'made_up'"):
        TreeEnsemble(text.replace("objective=regression", "objective=made_up"))
    with pytest.raises(ValueError, match="expects 10 features"):
        TreeEnsemble(text).predict(np.zeros((2, 9)))
