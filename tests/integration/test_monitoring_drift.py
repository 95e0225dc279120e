"""Drift and performance reports on real features: synthetic shifts, and the whole loop on a model.

Features are built by the real featurisation path (ONNX embeddings through the repo's embedding
cache), reports by the real Evidently adapter. Thresholds (docs/monitoring.md): a column drifts at
K-S / Z-test / chi-squared p < 0.05; the dataset drifts when 30% of the columns do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from financemath_mlops.monitoring.drift import DriftOutcome, compare
from financemath_mlops.monitoring.inputs import Featurizer, ReportInput
from financemath_mlops.synthetic.sample import generate_sample
from tests.conftest import pipeline_settings

pytestmark = pytest.mark.integration

ROWS = 300
SHIFTED_TOPICS = {"Accounting": 5, "Risk Management": 3, "Market Analysis & Economics": 1}


@pytest.fixture(scope="module")
def featurize(tmp_path_factory: pytest.TempPathFactory):
    settings = pipeline_settings(tmp_path_factory.mktemp("drift"))
    featurizer = Featurizer(settings.features, settings.paths)

    def build(name: str, **sample: Any) -> ReportInput:
        return ReportInput(featurizer(generate_sample(ROWS, **sample), name), name, "records")

    return build


@pytest.fixture(scope="module")
def reference(featurize) -> ReportInput:
    return featurize("reference", seed=1)


def detected(outcome: DriftOutcome) -> set[str]:
    return {c["column"] for c in outcome.columns if c["detected"]}


def test_a_fresh_sample_from_the_same_generator_shows_no_drift(reference, featurize):
    outcome = compare(reference, featurize("fresh", seed=2))
    assert len(outcome.columns) == 28 + 5  # 28 table/metadata features + 5 embedding components
    assert not outcome.dataset_drift
    assert outcome.share <= 0.1  # chance alone: about 5% of columns at p < 0.05
    assert not outcome.embedding["mean_drift"]


def test_a_changed_topic_mix_with_scaled_values_is_detected(reference, featurize):
    outcome = compare(reference, featurize("shifted", seed=3, topic_weights=SHIFTED_TOPICS,
                                           value_scale=10.0))  # fmt: skip
    assert outcome.dataset_drift and outcome.share >= 0.5
    assert {"topic_accounting", "topic_risk_management", "tbl_num_mean", "q_num_abs_max"} <= (
        detected(outcome)
    )
    assert outcome.embedding["drifted_components"] >= 2 and outcome.embedding["mean_drift"]
    assert outcome.top(1)[0]["detected"]


def test_scaled_values_alone_drift_only_the_amount_columns(reference, featurize):
    outcome = compare(reference, featurize("scaled", seed=4, value_scale=10.0))
    assert {"tbl_num_mean", "tbl_num_max", "q_num_abs_max"} <= detected(outcome)
    unrelated = [c for c in detected(outcome) if c.startswith(("topic_", "emb_pc"))]
    # The topic mix and the wording did not change: those 12 columns (7 topics, 5 embedding
    # components) flag only by chance, each with p < 0.05: 2 or fewer with probability 0.98
    # (binomial), where a real topic or wording shift flags most of them (the test above).
    assert len(unrelated) <= 2, unrelated
    assert not outcome.dataset_drift  # below the 30% share: visible per column, no alert


# --- the loop on a trained model: log -> drift report -> latest.json + MLflow ----------------


@pytest.fixture()
def monitoring_env(trained_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from tests.helpers import REPO_ROOT

    for name, value in trained_model.env.items():
        if name.startswith(("FMOPS_", "MLFLOW_")):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("FMOPS_PATHS__REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("FMOPS_PATHS__PREDICTIONS_DIR", str(tmp_path / "predictions"))
    monkeypatch.setenv("FMOPS_PATHS__HF_CACHE_DIR", str(REPO_ROOT / ".cache" / "hf"))
    monkeypatch.setenv("FMOPS_CONFIG", str(REPO_ROOT / "configs" / "default.yaml"))
    return tmp_path


def log_predictions(trained_model, directory: Path, rows: list[dict[str, Any]]) -> int:
    """What the service does per request: predict with features kept, record the entries."""
    from financemath_mlops import runs
    from financemath_mlops.monitoring.prediction_log import PredictionLog, prediction_entries
    from financemath_mlops.records import RecordInput

    runs.configure(trained_model.settings.mlflow)
    ref = runs.resolve(f"models:/{trained_model.model_name}@champion")
    predictor = runs.load_pyfunc(ref.uri).unwrap_python_model().predictor
    records = [RecordInput.from_mapping(r) for r in rows]
    identity = {"name": ref.name, "version": ref.version, "alias": "champion", "run_id": ref.run_id}
    with PredictionLog(directory, rotate_rows=50) as log:
        for start in range(0, len(records), 8):  # requests of up to 8 records
            batch = records[start : start + 8]
            scored = predictor.predict(batch, keep_features=True)
            log.record_many(
                prediction_entries(f"req-{start}", identity, list(scored.values),
                                   scored.warnings, scored.features, [r.topic for r in batch])
            )  # fmt: skip
    return log.written


def test_drift_on_the_prediction_log_against_the_models_training_data(
    trained_model, monitoring_env: Path, capsys
):
    from financemath_mlops.monitoring.__main__ import main
    from financemath_mlops.monitoring.publish import latest_report_metrics

    shifted = generate_sample(160, seed=21, topic_weights=SHIFTED_TOPICS, value_scale=10.0)
    assert log_predictions(trained_model, monitoring_env / "predictions", shifted) == 160
    code = main(
        ["drift", "--model-uri", f"models:/{trained_model.model_name}@champion",
         "--since", "1h", "--fail-on-drift"]
    )  # fmt: skip
    console = capsys.readouterr().out
    assert code == 1, console  # dataset drift with --fail-on-drift
    assert "DATASET DRIFT" in console and "top columns" in console
    (report,) = (monitoring_env / "reports").glob("2*/")
    assert (report / "drift.html").stat().st_size > 10_000
    data = json.loads((report / "drift.json").read_text())
    assert data["reference"]["kind"] == "training-features"
    assert data["reference"]["rows"] > 100 and data["current"]["rows"] == 160
    assert data["model"]["version"] == trained_model.version
    assert data["summary"]["dataset_drift"] and data["evidently"]["metrics"]

    gauges = latest_report_metrics(monitoring_env / "reports")
    assert gauges["fmops_drift_share"] == pytest.approx(data["summary"]["share"])
    assert gauges["fmops_drift_detected"] == 1.0 and gauges["fmops_drift_current_rows"] == 160

    runs = monitoring_runs(trained_model, "drift")
    assert runs[0].data.metrics["drift_share"] == pytest.approx(data["summary"]["share"])
    assert runs[0].data.tags["model.version"] == trained_model.version


def test_performance_on_the_holdout_reproduces_the_training_time_metrics(
    trained_model, monitoring_env: Path, capsys
):
    from financemath_mlops import runs
    from financemath_mlops.monitoring.__main__ import main
    from financemath_mlops.monitoring.publish import latest_report_metrics

    assert main(["performance", "--model-uri", f"models:/{trained_model.model_name}@champion"]) == 0
    console = capsys.readouterr().out
    assert "training holdout" in console
    (report,) = (monitoring_env / "reports").glob("2*/")
    data = json.loads((report / "performance.json").read_text())
    assert (report / "performance.html").is_file()
    run_metrics = runs.run_metrics(trained_model.run_id)
    assert data["metrics"]["n"] == run_metrics["holdout_n"]
    assert data["metrics"]["mae"] == pytest.approx(run_metrics["holdout_mae"], rel=1e-6)
    assert data["evidently_metrics"]["mae"] == pytest.approx(data["metrics"]["mae"], rel=1e-9)
    gauges = latest_report_metrics(monitoring_env / "reports")
    assert gauges["fmops_performance_mae"] == pytest.approx(run_metrics["holdout_mae"], rel=1e-6)
    assert gauges["fmops_performance_training_mae"] == run_metrics["holdout_mae"]
    assert monitoring_runs(trained_model, "performance")


def test_performance_on_unlabelled_data_says_it_needs_labels(
    trained_model, monitoring_env: Path, capsys
):
    from financemath_mlops.cli import run_main
    from financemath_mlops.monitoring.__main__ import main
    from tests.helpers import make_rows, write_json

    rows = [{**row, "ground_truth": None} for row in make_rows(3)]  # like the real test split
    unlabelled = write_json(monitoring_env / "unlabelled.json", rows)
    args = ["performance", "--model-uri", f"models:/{trained_model.model_name}@champion",
            "--data", str(unlabelled)]  # fmt: skip
    assert run_main(main, args) == 2
    assert "has no labelled records" in capsys.readouterr().err
    assert not (monitoring_env / "reports").exists()


def test_performance_on_fewer_labelled_rows_than_the_minimum_is_refused(
    trained_model, monitoring_env: Path, capsys
):
    from financemath_mlops.cli import run_main
    from financemath_mlops.monitoring.__main__ import main
    from tests.helpers import make_rows, write_json

    few = write_json(monitoring_env / "few.json", make_rows(5))
    args = ["performance", "--model-uri", f"models:/{trained_model.model_name}@champion",
            "--data", str(few)]  # fmt: skip
    assert run_main(main, args) == 2  # refused before predicting: no number to mislead a gate
    err = capsys.readouterr().err
    assert "only 5 labelled rows (< 30)" in err and "monitoring.min_rows" in err
    assert not (monitoring_env / "reports").exists()


def monitoring_runs(trained_model, kind: str) -> list[Any]:
    from mlflow import MlflowClient

    client = MlflowClient(trained_model.tracking_uri)
    experiment = client.get_experiment_by_name("financemath-monitoring")
    assert experiment is not None
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`monitoring.kind` = '{kind}'",
        order_by=["attributes.start_time DESC"],
    )
