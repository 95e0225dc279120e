"""The evaluation stage: score a registered model on the holdout rows recorded in its own run.

Never a fresh split: the holdout records travel with the run, so the figures are on rows the model
never saw. Baselines (global and per-topic median) are fitted on that run's training rows only.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops import runs
from financemath_mlops.atomic import write_json
from financemath_mlops.config import Settings
from financemath_mlops.features.build import TARGET_COLUMN, TOPIC_COLUMN, columns_path_for
from financemath_mlops.scoring import median_baselines, regression_metrics

log = logging.getLogger(__name__)

# Published accuracies on the validation split, program-of-thought prompting (Zhao et al., 2024).
PUBLISHED_ACCURACY = {"GPT-4o, PoT": 0.670, "Claude 3.5 Sonnet, PoT": 0.595}
HOLDOUT_RECORDS = "data/holdout_records.jsonl"
TRAINING_FEATURES = "data/training_features.parquet"
TRAIN_IDS = "split/train_ids.json"


@dataclass
class RunData:
    """What a model's run recorded about its data: training rows and raw holdout records."""

    holdout: list[dict[str, Any]]
    train_topics: list[str]
    train_targets: np.ndarray
    train_ids: list[str]


def default_model_name(settings: Settings) -> str:
    """The name training registered under: <name>-sample when the features came from the sample."""
    manifest_path = columns_path_for(settings.features_output)
    source = None
    if manifest_path.is_file():
        source = json.loads(manifest_path.read_text(encoding="utf-8")).get("data", {}).get("source")
    return runs.model_name_for(settings, source)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def load_run_data(run_id: str, work: Path) -> RunData:
    import pandas as pd

    holdout = read_jsonl(runs.store.download(run_id, HOLDOUT_RECORDS, work))
    train = pd.read_parquet(runs.store.download(run_id, TRAINING_FEATURES, work))
    train_ids = json.loads(runs.store.download(run_id, TRAIN_IDS, work).read_text())
    return RunData(
        holdout=holdout,
        train_topics=train[TOPIC_COLUMN].astype(str).tolist(),
        train_targets=train[TARGET_COLUMN].to_numpy(dtype=np.float64),
        train_ids=train_ids,
    )


def predict_records(model: Any, records: list[dict[str, Any]]) -> np.ndarray:
    """Predict with a loaded pyfunc from raw records (the same path serving uses)."""
    from financemath_mlops.model.packaging import input_example

    if not records:
        return np.empty(0)
    out = model.predict(input_example(records))
    return np.asarray(out["prediction"], dtype=np.float64)


def baseline_predictions(data: RunData, topics: list[str]) -> dict[str, np.ndarray]:
    """Global and per-topic median of the run's training targets (the same code CV uses)."""
    return median_baselines(data.train_targets, np.array(data.train_topics), np.array(topics))


def score(predictions: np.ndarray, truths: np.ndarray, topics: list[str]) -> dict[str, Any]:
    """Overall metrics plus the same per topic."""
    out: dict[str, Any] = regression_metrics(predictions, truths)
    out["per_topic"] = {
        topic: regression_metrics(
            predictions[[t == topic for t in topics]], truths[[t == topic for t in topics]]
        )
        for topic in sorted(set(topics))
    }
    return out


def evaluate(settings: Settings, model_uri: str | None = None) -> dict[str, Any]:
    """Score the model on its run's holdout rows, write metrics.json, log to the run."""
    import mlflow

    started = time.perf_counter()
    runs.configure(settings)
    uri = model_uri or settings.evaluation.model_uri
    uri = uri or f"models:/{default_model_name(settings)}@{runs.CHALLENGER}"
    ref = runs.resolve(uri)
    assert ref.run_id is not None
    with tempfile.TemporaryDirectory(prefix="fmops-eval-") as tmp:
        data = load_run_data(ref.run_id, Path(tmp))
    model = runs.load_pyfunc(ref.uri)
    truths = np.array([float(r["ground_truth"]) for r in data.holdout])
    topics = [str(r["topic"]) for r in data.holdout]
    predictions = predict_records(model, data.holdout)
    run_metrics = runs.run_metrics(ref.run_id)
    cv = {k.removeprefix("cv_"): v for k, v in run_metrics.items() if k.startswith("cv_")}
    report: dict[str, Any] = {
        "model": {"uri": uri, "name": ref.name, "version": ref.version, "run_id": ref.run_id},
        "holdout": score(predictions, truths, topics),
        "cv": cv,
        "baselines": {
            name: score(values, truths, topics)
            for name, values in baseline_predictions(data, topics).items()
        },
        "published_llm_accuracy": PUBLISHED_ACCURACY,
        "seconds": round(time.perf_counter() - started, 2),
    }
    output = settings.metrics_output
    write_json(output, report)
    with mlflow.start_run(run_id=ref.run_id):
        mlflow.log_metrics(
            {
                f"holdout_{k}": float(v)
                for k, v in report["holdout"].items()
                if isinstance(v, int | float)
            }
        )
        for name, values in report["baselines"].items():
            mlflow.log_metric(f"baseline_{name}_log_mae", values["log_mae"])
            mlflow.log_metric(f"baseline_{name}_mae", values["mae"])
        mlflow.log_artifact(str(output), "evaluation")
    report["output"] = str(output)
    log.info("holdout metrics written to %s", output)
    return report


def report_table(report: dict[str, Any]) -> str:
    """A small console table: model vs baselines, and published LLM accuracies for context."""
    rows = [("model (holdout)", report["holdout"])]
    rows += [(f"baseline: {name}", values) for name, values in report["baselines"].items()]
    lines = [
        f"evaluation of {report['model']['uri']} (version {report['model']['version']}) "
        f"on {report['holdout']['n']} holdout rows it never saw",
        f"  {'':<34}{'MAE':>12}{'RMSE':>12}{'median AE':>12}{'log-MAE':>9}{'accuracy':>10}",
    ]
    for name, m in rows:
        lines.append(
            f"  {name:<34}{m['mae']:>12.4g}{m['rmse']:>12.4g}{m['median_ae']:>12.4g}"
            f"{m['log_mae']:>9.3f}{m['accuracy']:>10.1%}"
        )
    cv = report.get("cv") or {}
    if cv:
        lines.append(
            f"  {'model (CV on train rows)':<34}{cv.get('mae_mean', float('nan')):>12.4g}"
            f"{cv.get('rmse_mean', float('nan')):>12.4g}{cv.get('median_ae_mean', float('nan')):>12.4g}"
            f"{cv.get('log_mae_mean', float('nan')):>9.3f}{cv.get('accuracy_mean', float('nan')):>10.1%}"
        )
    for name in ("global_median", "topic_median"):
        if f"{name}_log_mae_mean" in cv:
            label = f"baseline: {name} (CV)"
            lines.append(
                f"  {label:<34}{cv[f'{name}_mae_mean']:>12.4g}{cv[f'{name}_rmse_mean']:>12.4g}"
                f"{cv[f'{name}_median_ae_mean']:>12.4g}{cv[f'{name}_log_mae_mean']:>9.3f}"
                f"{cv[f'{name}_accuracy_mean']:>10.1%}"
            )
    for name, acc in report["published_llm_accuracy"].items():
        lines.append(f"  {name + ' (published)':<34}{'':>45}{acc:>10.1%}")
    lines.append("  (published: LLMs on the whole validation split; ours: the holdout rows above)")
    lines.append(f"  metrics file: {report.get('output')}")
    return "\n".join(lines)
