"""A full run against a temporary SQLite tracking store: params, metrics, artefacts, registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from financemath_mlops import runs
from financemath_mlops.config import Settings
from financemath_mlops.errors import StageError
from financemath_mlops.features.build import ID_COLUMN, feature_values, read_features
from financemath_mlops.features.rows import FEATURE_COLUMNS, FEATURE_VERSION
from financemath_mlops.model.target import inverse
from tests.conftest import TrainedModel, pipeline_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(trained_model: TrainedModel):
    from mlflow.tracking import MlflowClient

    return MlflowClient(trained_model.tracking_uri, trained_model.tracking_uri)


def test_run_records_params_lineage_and_cv_metrics(trained_model: TrainedModel, client) -> None:
    run = client.get_run(trained_model.run_id)
    params = run.data.params
    assert params["embedding.backend"] == "onnx"
    assert params["embedding.model_id"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert params["embedding.source"] in {"hub", "package", "local"}
    assert params["target_transform"] == "signed_log1p"
    assert params["split_seed"] == "42"
    assert params["data.source"] == "sample"
    assert params["feature_version"] == str(FEATURE_VERSION)
    assert "lightgbm.num_leaves" in params
    assert run.data.tags["git_commit"]
    metrics = run.data.metrics
    for name in ("cv_log_mae_mean", "cv_log_mae_std", "cv_mae_mean", "cv_accuracy_mean"):
        assert np.isfinite(metrics[name]), name
    assert metrics["n_train"] + metrics["n_holdout"] == 300
    # Evaluation logged its holdout figures to the same run.
    assert np.isfinite(metrics["holdout_log_mae"])
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.name == "finance_math_features"
    assert inputs[0].dataset.digest


def test_run_artifacts_carry_split_reference_table_and_holdout(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    runs.configure(trained_model.settings.mlflow)
    run_id = trained_model.run_id
    columns = json.loads(runs.store.download(run_id, "feature_columns.json", tmp_path).read_text())
    assert columns["columns"] == list(FEATURE_COLUMNS)
    train_ids = json.loads(
        runs.store.download(run_id, "split/train_ids.json", tmp_path).read_text()
    )
    holdout_ids = json.loads(
        runs.store.download(run_id, "split/holdout_ids.json", tmp_path).read_text()
    )
    assert not set(train_ids) & set(holdout_ids)
    reference = pd.read_parquet(
        runs.store.download(run_id, "data/training_features.parquet", tmp_path)
    )
    assert sorted(reference[ID_COLUMN]) == sorted(train_ids)
    holdout = runs.store.download(run_id, "data/holdout_records.jsonl", tmp_path)
    holdout_rows = [json.loads(line) for line in holdout.read_text().splitlines()]
    assert sorted(r["question_id"] for r in holdout_rows) == sorted(holdout_ids)
    assert all(r["ground_truth"] is not None for r in holdout_rows)


def test_registered_version_has_aliases(trained_model: TrainedModel, client) -> None:
    for alias in (runs.CHALLENGER, runs.CHAMPION):
        version = client.get_model_version_by_alias(trained_model.model_name, alias)
        assert str(version.version) == trained_model.version
        assert version.run_id == trained_model.run_id
    assert trained_model.model_name == "financemath-regressor-sample"


def test_champion_loads_and_predicts_like_the_in_memory_model_from_raw_records(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    runs.configure(trained_model.settings.mlflow)
    model = runs.load_pyfunc(f"models:/{trained_model.model_name}@champion")
    predictor = model.unwrap_python_model().predictor
    rows = [json.loads(line) for line in trained_model.ingested_path.read_text().splitlines()]
    rows = rows[:25]
    served = runs.RecordModel(model).values(rows)  # what evaluation and batch use
    frame, _ = read_features(trained_model.features_path)
    frame = frame.set_index(ID_COLUMN).loc[[r["question_id"] for r in rows]]
    from_table = inverse(
        predictor.booster.predict(feature_values(frame.reset_index())), "signed_log1p"
    )
    np.testing.assert_allclose(served, from_table, rtol=1e-6)


def test_evaluation_report_scores_only_holdout_rows(trained_model: TrainedModel) -> None:
    report = json.loads(trained_model.metrics_path.read_text())
    assert report["holdout"]["n"] == 60  # round(0.2 * n) per topic of 300 rows
    assert report["model"]["run_id"] == trained_model.run_id
    assert set(report["baselines"]) == {"global_median", "topic_median"}
    assert set(report["holdout"]["per_topic"]) <= set(
        pd.read_parquet(trained_model.features_path)["topic"]
    )
    for key in ("mae", "rmse", "median_ae", "log_mae", "accuracy"):
        assert key in report["holdout"] and f"{key}_mean" in report["cv"]


def test_loading_the_model_does_not_import_torch(trained_model: TrainedModel) -> None:
    code = (
        "import sys, mlflow\n"
        f"mlflow.set_tracking_uri({trained_model.tracking_uri!r})\n"
        f"m = mlflow.pyfunc.load_model('models:/{trained_model.model_name}@champion')\n"
        "import pandas as pd\n"
        "print(m.predict(pd.DataFrame([{'question': 'What is 5% of $200?', 'tables': [],"
        " 'topic': 'Accounting'}]))['prediction'][0])\n"
        "print(sorted(n for n in ('torch', 'sentence_transformers', 'prefect', 'evidently')"
        " if n in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=trained_model.env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    value, modules = done.stdout.strip().splitlines()[-2:]
    assert np.isfinite(float(value))
    assert modules == "[]"


def test_unknown_model_uri_fails_clearly(trained_model: TrainedModel) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "financemath_mlops.evaluation", "--model-uri",
         "models:/no-such-model@champion"],
        env=trained_model.env, cwd=trained_model.workdir, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert "cannot resolve model models:/no-such-model@champion" in done.stderr
    assert "Traceback" not in done.stderr


# --- training.lightgbm checked before CV; servable or not registered (issue 28) ---------------

TUNED = Settings().training.lightgbm


def _scratch_settings(trained_model: TrainedModel, workdir: Path, lightgbm: dict) -> Settings:
    """The trained model's feature table, a new empty store under workdir."""
    return pipeline_settings(
        workdir,
        training={"features": trained_model.features_path, "lightgbm": lightgbm, "cv_folds": 2},
        features={"input": trained_model.ingested_path},
    )


def _assert_store_empty(tracking_uri: str) -> None:
    """No run, no model version: best of all, no store file (nothing opened it)."""
    from mlflow.tracking import MlflowClient

    if not Path(tracking_uri.removeprefix("sqlite:///")).exists():
        return
    client = MlflowClient(tracking_uri, tracking_uri)
    assert client.search_model_versions() == []
    assert client.search_registered_models() == []
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert client.search_runs(experiments) == []


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"objectiv": "poisson"}, "did you mean 'objective'?"),
        ({"objective": "poissn"}, "Unknown objective type name: poissn"),
        ({"bagging_fraction": 0.7}, "subsample and bagging_fraction"),
        ({"linear_tree": True, "objective": "regression"}, "cannot evaluate linear trees"),
        ({"categorical_feature": [0]}, "cannot evaluate categorical splits"),
    ],
)
def test_a_bad_lightgbm_parameter_stops_training_before_cv_and_registers_nothing(
    trained_model: TrainedModel, tmp_path: Path, monkeypatch, restore_mlflow_uris, bad, named
) -> None:
    from financemath_mlops.training import train as train_module

    def no_cv(*args, **kwargs):
        raise AssertionError("cross-validation started with parameters that should be refused")

    monkeypatch.setattr(train_module, "cross_validate", no_cv)
    settings = _scratch_settings(trained_model, tmp_path, {**TUNED, **bad})
    with pytest.raises(StageError, match="training.lightgbm") as refused:
        train_module.train(
            settings.training, settings.mlflow, settings.features, settings.paths,
            settings.training_features, settings.features_input,
        )  # fmt: skip
    assert named in str(refused.value)
    _assert_store_empty(settings.mlflow.tracking_uri)


def test_a_model_the_serving_path_cannot_evaluate_is_refused_before_any_run(
    trained_model: TrainedModel, tmp_path: Path, monkeypatch, restore_mlflow_uris
) -> None:
    """If a linear-tree setting got past the parameter check, the servable check stops it."""
    from financemath_mlops.training import train as train_module
    from financemath_mlops.training.lightgbm_params import CheckedParams

    monkeypatch.setattr(
        train_module, "check_lightgbm_params", lambda *a: CheckedParams("regression", "identity", 0)
    )
    linear = {**TUNED, "objective": "regression", "linear_tree": True, "n_estimators": 5}
    settings = _scratch_settings(trained_model, tmp_path, linear)
    with pytest.raises(StageError, match="linear tree") as refused:
        train_module.train(
            settings.training, settings.mlflow, settings.features, settings.paths,
            settings.training_features, settings.features_input,
        )  # fmt: skip
    assert "Nothing was logged or registered" in str(refused.value)
    assert "no MLflow run" in str(refused.value) or "no run" in str(refused.value)
    _assert_store_empty(settings.mlflow.tracking_uri)


def _table(trained_model: TrainedModel) -> tuple[np.ndarray, np.ndarray, dict, Path]:
    from financemath_mlops.features.build import TARGET_COLUMN, bundle_for

    frame, manifest = read_features(trained_model.features_path)
    x = feature_values(frame)
    y = frame[TARGET_COLUMN].to_numpy(np.float64)
    return (
        x,
        y,
        manifest,
        bundle_for(
            trained_model.settings.features.embedding,
            trained_model.settings.paths,
            manifest["embedding"],
        ),
    )


def test_the_servable_check_refuses_a_linear_tree_booster_and_passes_the_tuned_one(
    trained_model: TrainedModel,
) -> None:
    from financemath_mlops.training.fit import fit_booster
    from financemath_mlops.training.servable import check_servable

    x, y, manifest, bundle = _table(trained_model)
    linear = fit_booster(
        x, y, {"objective": "regression", "linear_tree": True, "n_estimators": 5},
        "signed_log1p", seed=1, threads=1,
    )  # fmt: skip
    with pytest.raises(StageError, match="model/trees.py refuses it .*linear tree"):
        check_servable(linear, x, manifest, "signed_log1p", bundle)
    tuned = fit_booster(x, y, {**TUNED, "n_estimators": 20}, "signed_log1p", seed=1, threads=1)
    checked = check_servable(tuned, x, manifest, "signed_log1p", bundle)
    assert checked.rows == len(x)
    assert checked.max_abs_diff < 1e-9


@pytest.mark.parametrize("source", ["yaml", "env"])
def test_the_training_command_exits_2_naming_a_mistyped_parameter(
    trained_model: TrainedModel, tmp_path: Path, source: str
) -> None:
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**trained_model.env, "FMOPS_MLFLOW__TRACKING_URI": tracking_uri}
    config = tmp_path / "config.yaml"
    config.write_text(
        "training:\n"
        f"  features: {trained_model.features_path}\n"
        + ("  lightgbm:\n    objectiv: poisson\n" if source == "yaml" else "")
    )
    if source == "env":
        env["FMOPS_TRAINING__LIGHTGBM"] = '{"objectiv": "poisson"}'
    done = subprocess.run(
        [sys.executable, "-m", "financemath_mlops.training", "--config", str(config)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "objectiv: not a LightGBM parameter (did you mean 'objective'?)" in done.stderr
    assert "Traceback" not in done.stderr and "[LightGBM]" not in done.stderr
    _assert_store_empty(tracking_uri)


def test_parameters_lightgbm_refuses_on_the_real_targets_stop_training_cleanly(
    trained_model: TrainedModel, tmp_path: Path, restore_mlflow_uris
) -> None:
    """gamma passes the parameter check (a valid objective) but not negative targets."""
    from financemath_mlops.features.build import TARGET_COLUMN
    from financemath_mlops.training.train import train

    frame, _ = read_features(trained_model.features_path)
    assert (frame[TARGET_COLUMN] < 0).any()  # signed_log1p keeps the sign: gamma cannot fit it
    settings = _scratch_settings(trained_model, tmp_path, {**TUNED, "objective": "gamma"})
    with pytest.raises(StageError, match=r"LightGBM refused to train .*at least one target label"):
        train(
            settings.training, settings.mlflow, settings.features, settings.paths,
            settings.training_features, settings.features_input,
        )  # fmt: skip
    _assert_store_empty(settings.mlflow.tracking_uri)
