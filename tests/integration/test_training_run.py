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
from financemath_mlops.features.build import ID_COLUMN, feature_values, read_features
from financemath_mlops.features.rows import FEATURE_COLUMNS
from financemath_mlops.model.target import inverse
from tests.conftest import TrainedModel

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
    assert params["feature_version"] == "1"
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
    runs.configure(trained_model.settings)
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
    runs.configure(trained_model.settings)
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
