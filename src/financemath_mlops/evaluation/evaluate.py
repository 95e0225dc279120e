"""The evaluation stage: score a registered model on the holdout rows recorded in its own run.

Never a fresh split: the holdout records travel with the run, so the figures are on rows the model
never saw. Baselines (global and per-topic median) are fitted on that run's training rows only.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops import runs
from financemath_mlops.atomic import write_json
from financemath_mlops.scoring import median_baselines, regression_metrics

log = logging.getLogger(__name__)

# Published accuracies on the validation split, program-of-thought prompting (Zhao et al., 2024).
PUBLISHED_ACCURACY = {"GPT-4o, PoT": 0.670, "Claude 3.5 Sonnet, PoT": 0.595}


def baseline_predictions(data: runs.RunData, topics: list[str]) -> dict[str, np.ndarray]:
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


def evaluate(ref: runs.ModelRef, output: Path, *, uri: str | None = None) -> dict[str, Any]:
    """Score the model ``ref`` on its run's holdout rows, write ``output`` (metrics.json), log
    to the run; ``uri``: how the report names it (default its pinned URI).

    The caller picks the model in the store it configured (``runs.configure``): the CLI
    evaluation.model_uri, else the model training registered from training.features
    (:func:`runs.resolve_challenger`); the flow what it just trained.
    """
    started = time.perf_counter()
    uri = uri or ref.uri
    if ref.run_id is None:
        raise runs.TrackingError(
            f"{uri} is a model folder that names no MLflow run: evaluation scores the holdout "
            "rows recorded in the model's run; pass its models:/ or runs:/ URI"
        )
    data = runs.load_run_data_in_tmp(ref.run_id)
    truths = np.array([float(r["ground_truth"]) for r in data.holdout])
    topics = [str(r["topic"]) for r in data.holdout]
    predictions = runs.predict_records(ref.uri, data.holdout)
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
    write_json(output, report)
    metrics = {
        f"holdout_{k}": v for k, v in report["holdout"].items() if isinstance(v, int | float)
    }
    for name, values in report["baselines"].items():
        metrics[f"baseline_{name}_log_mae"] = values["log_mae"]
        metrics[f"baseline_{name}_mae"] = values["mae"]
    runs.record_evaluation(ref.run_id, metrics, output)
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
