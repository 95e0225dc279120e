"""The evaluation report: the model card's figures, computed from a labelled FinanceMath file.

``python -m financemath_mlops.evaluation report --input FILE`` reads and validates the file (the
ingestion stage's reader and validator), builds the production feature rows (the one feature
function, MiniLM through the configured backend), runs repeated topic-stratified nested CV
(:mod:`.nested`) and summarises it with paired bootstrap intervals (:mod:`.intervals`) against the
baselines (:mod:`.baselines`). :mod:`.card` renders the result as ``docs/model-card.md``.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops.config import EmbeddingSettings, Settings
from financemath_mlops.errors import StageError
from financemath_mlops.evaluation.answer_models import NAMES as ANSWER_MODELS
from financemath_mlops.evaluation.answer_models import answer_models
from financemath_mlops.evaluation.baselines import chance_accuracy, numbers_median, record_numbers
from financemath_mlops.evaluation.nested import (
    BASELINES,
    Candidate,
    CVData,
    log_errors,
    repeated_nested_cv,
)
from financemath_mlops.evaluation.sign_scale import BANDS
from financemath_mlops.intervals import paired_bootstrap
from financemath_mlops.provenance import cpu
from financemath_mlops.scoring import financemath_correct, regression_metrics

log = logging.getLogger(__name__)

MIN_ROWS = 50
EMBEDDING_DECIMALS = 5  # rounding makes the card reproducible across ONNX thread counts
# The second LightGBM setting the inner CV may pick instead of the configured one: shallower.
SMALL_SETTING = {
    "objective": "l1",
    "n_estimators": 100,
    "learning_rate": 0.05,
    "num_leaves": 4,
    "min_child_samples": 20,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.5,
    "reg_lambda": 5.0,
}
# The answer ranges the errors are broken down by: sign and scale's bands, labelled for the card.
RANGE_LABELS = ("y < 0", "0 <= y < 1", "1 <= y < 100", "100 <= y < 10,000", "y >= 10,000")
RANGES = tuple(
    (label, low, high) for label, (_, low, high) in zip(RANGE_LABELS, BANDS, strict=True)
)


@dataclass
class ReportOptions:
    folds: int = 5
    seeds: int = 5
    inner_folds: int = 3
    bootstrap: int = 2000
    jobs: int = 1


def candidates() -> list[Candidate]:
    return [
        Candidate(form, numbers, setting)
        for form in ("full", "pca", "similarity")
        for numbers in (False, True)
        for setting in ("configured", "small")
    ]


def load_labelled(path: Path) -> list[dict[str, Any]]:
    """Validated records with an answer, in file order (the ingestion stage's reader)."""
    from financemath_mlops.ingestion.sources import read_local_file
    from financemath_mlops.ingestion.validate import validate_rows

    if not path.is_file():
        raise StageError(f"report input not found: {path}")
    result = validate_rows(read_local_file(path), meta={"source": "local"}, ingested_at="-")
    records = [r.model_dump(mode="json") for r in result.records]
    labelled = [r for r in records if r.get("ground_truth") is not None]
    if len(labelled) < MIN_ROWS:
        raise StageError(
            f"{path} has {len(labelled)} valid labelled rows ({len(result.rejects)} rejected); "
            f"the report needs at least {MIN_ROWS}"
        )
    return labelled


def load_unlabelled(path: Path | None) -> list[dict[str, Any]]:
    """Every validated record of the unlabelled file (their answers, if any, are never read);
    none when there is no such file. Churn needs no labels, so these widen its rows."""
    from financemath_mlops.ingestion.sources import read_local_file
    from financemath_mlops.ingestion.validate import validate_rows

    if path is None or not path.is_file():
        return []
    result = validate_rows(read_local_file(path), meta={"source": "local"}, ingested_at="-")
    return [r.model_dump(mode="json") for r in result.records]


def cv_data(
    settings: Settings, records: list[dict[str, Any]], embedding: EmbeddingSettings | None = None
) -> CVData:
    """Production feature rows for the records, split into hand features and embeddings
    (``embedding``: another embedding than the configured one); an unlabelled row's target is NaN."""
    from financemath_mlops.features.build import embedder_for, embedding_key
    from financemath_mlops.features.embedding_cache import embed_with_cache
    from financemath_mlops.features.rows import N_HAND_FEATURES, feature_matrix
    from financemath_mlops.records import RecordInput

    embedder, info = embedder_for(embedding or settings.features.embedding, settings.paths)
    questions = [str(r["question"]) for r in records]
    cache = settings.paths.cache_dir / "embeddings"
    vectors = np.asarray(embed_with_cache(embedder, questions, cache, embedding_key(info)).vectors)
    matrix = feature_matrix([RecordInput.from_mapping(r) for r in records], vectors)
    numbers = [record_numbers(r["question"], r.get("tables") or []) for r in records]
    return CVData(
        hand=matrix[:, :N_HAND_FEATURES],
        embeddings=np.round(matrix[:, N_HAND_FEATURES:], EMBEDDING_DECIMALS),
        numbers_median=numbers_median(numbers),
        target=np.array(
            [
                math.nan if r.get("ground_truth") is None else float(r["ground_truth"])
                for r in records
            ]
        ),
        topics=np.array([str(r["topic"]) for r in records]),
    )


def per_seed_metrics(predictions: np.ndarray, truths: np.ndarray) -> dict[str, float]:
    """Each metric computed per seed over all rows, then mean (and std of log-MAE) over seeds."""
    runs = [regression_metrics(p, truths) for p in predictions]
    out = {k: float(np.mean([r[k] for r in runs])) for k in ("mae", "rmse", "median_ae")}
    out.update({k: float(np.mean([r[k] for r in runs])) for k in ("log_mae", "accuracy")})
    out["log_mae_std"] = (
        float(np.std([r["log_mae"] for r in runs], ddof=1)) if len(runs) > 1 else 0.0
    )
    out["n"] = len(truths)
    return out


def row_losses(predictions: np.ndarray, truths: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row losses averaged over seeds: log error, absolute error, miss rate."""
    misses = np.array(
        [
            [not financemath_correct(p, t) for p, t in zip(row, truths, strict=True)]
            for row in predictions
        ]
    )
    return {
        "log": log_errors(predictions, truths).mean(0),
        "abs": np.abs(predictions - truths).mean(0),
        "miss": misses.mean(0),
    }


def compare(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], opts: ReportOptions, rows=None
) -> dict[str, Any]:
    """Paired differences A - B: log-MAE, median AE, accuracy (negative log/median: A better)."""
    pick = (lambda v: v) if rows is None else (lambda v: v[rows])
    seed = 0
    log_diff = paired_bootstrap(pick(a["log"]), pick(b["log"]), opts.bootstrap, seed)
    med_diff = paired_bootstrap(
        pick(a["abs"]), pick(b["abs"]), opts.bootstrap, seed, statistic="median"
    )
    miss_diff = paired_bootstrap(pick(a["miss"]), pick(b["miss"]), opts.bootstrap, seed)
    accuracy = {  # accuracy difference = -(miss difference)
        "n": miss_diff.n,
        "difference": -miss_diff.difference,
        "low": -miss_diff.high,
        "high": -miss_diff.low,
        "confidence": miss_diff.confidence,
    }
    return {"log_mae": log_diff.as_dict(), "median_ae": med_diff.as_dict(), "accuracy": accuracy}


def facts(settings: Settings, data: CVData, cands: list[Candidate]) -> dict[str, Any]:
    """The counts the card's prose states, taken from the code and the data (never typed in)."""
    from financemath_mlops.evaluation import candidates, ranker, sign_scale
    from financemath_mlops.evaluation.nested import PCA_COMPONENTS

    def source(module) -> str:  # the card names modules by path: it follows a move
        return module.__name__.removeprefix("financemath_mlops.").replace(".", "/") + ".py"

    return {
        "hand_features": int(data.hand.shape[1]),
        "embedding_dims": int(data.embeddings.shape[1]),
        "embedding_decimals": EMBEDDING_DECIMALS,
        "pca_components": PCA_COMPONENTS,
        "embedding_forms": len({c.embedding for c in cands}),
        "lightgbm_settings": len({c.setting for c in cands}),
        "candidate_constructions": len(candidates.OPERATIONS),
        "modules": {
            m.__name__.rsplit(".", 1)[1]: source(m) for m in (candidates, ranker, sign_scale)
        },
        "holdout_fraction": settings.training.holdout_fraction,
        "answer_min": float(data.target.min()),
        "answer_max": float(data.target.max()),
    }


def precision_churn(
    settings: Settings,
    records: list[dict[str, Any]],
    unlabelled: Path | None,
    lgb_settings: dict[str, dict[str, Any]],
    opts: ReportOptions,
) -> dict[str, Any]:
    """The int8 rule (:mod:`.churn`): the served candidate fitted on the card's outer folds with
    fp32 and with int8 embeddings, predicting the labelled rows (out of fold) and every row of the
    unlabelled file. Both embeddings come through the embedding cache, so a rerun embeds nothing."""
    from financemath_mlops.evaluation import churn

    extra = load_unlabelled(unlabelled)
    rows = records + extra
    predictions = {}
    for precision in ("fp32", "int8"):
        cfg = settings.features.embedding.model_copy(
            update={"precision": precision, "backend": "onnx"}
        )
        data = cv_data(settings, rows, cfg)
        predictions[precision] = churn.served_predictions(
            data, len(records), lgb_settings, opts.folds, opts.seeds
        )
    target = np.array([float(r["ground_truth"]) for r in records])
    result = churn.precision_rule(predictions["fp32"], predictions["int8"], target, opts.bootstrap)
    result["unlabelled_file"] = unlabelled.name if extra and unlabelled else None
    result["candidate"] = churn.SERVED.name
    result["configured_precision"] = settings.features.embedding.precision
    result["cpu"] = cpu()
    return result


def build_report(
    settings: Settings, path: Path, opts: ReportOptions, unlabelled: Path | None = None
) -> dict[str, Any]:
    """Run the whole analysis; a JSON-ready dict the card is rendered from. ``unlabelled``: the
    file whose questions widen the int8 rule's churn (its answers are never read)."""
    started = time.perf_counter()
    records = load_labelled(path)
    data = cv_data(settings, records)
    lgb_settings = {"configured": dict(settings.training.lightgbm), "small": SMALL_SETTING}
    cands = candidates()
    log.info("nested CV: %d candidates, %d folds x %d seeds", len(cands), opts.folds, opts.seeds)
    cv = repeated_nested_cv(
        cands, lgb_settings, data, opts.folds, opts.seeds, opts.inner_folds, opts.jobs,
        progress=lambda done, total: log.info("outer fold %d/%d done", done, total),
    )  # fmt: skip
    preds, truths = cv["predictions"], data.target
    numbers = [record_numbers(r["question"], r.get("tables") or []) for r in records]
    log.info("answer models (candidate ranker, sign/scale) on the same folds")
    answers = answer_models(
        records, data, lgb_settings, preds["model"], numbers, opts.folds, opts.seeds,
        opts.inner_folds, opts.jobs,
    )  # fmt: skip
    preds = {**preds, **answers.pop("predictions")}
    losses = {name: row_losses(p, truths) for name, p in preds.items()}
    summary = {name: per_seed_metrics(preds[name], truths) for name in ["model", *BASELINES]}
    chance = chance_accuracy(numbers, truths)
    differences = {b: compare(losses["model"], losses[b], opts) for b in BASELINES}
    best = min(BASELINES, key=lambda b: summary[b]["log_mae"])
    chance_losses = losses[best] | {"miss": answers.pop("chance_miss")}
    answers["best_baseline"] = best
    answers["sign_scale_negative_rows"] = int((preds["sign_scale"] < 0).any(axis=0).sum())
    answers["sign_scale_below_one_rows"] = int((preds["sign_scale"] < 1).any(axis=0).sum())
    answers["models"] = {
        name: {
            "metrics": per_seed_metrics(preds[name], truths),
            "vs_best_baseline": compare(losses[name], losses[best], opts),
            "vs_chance": compare(losses[name], chance_losses, opts)["accuracy"],
            "vs_model": compare(losses[name], losses["model"], opts),
        }
        for name in ("model", *ANSWER_MODELS)
    }
    sweep = []
    for c in cands:
        m = per_seed_metrics(preds[c.name], truths)
        sweep.append(
            {
                "candidate": c.name,
                "embedding": c.embedding,
                "numbers_median": c.numbers_median,
                "setting": c.setting,
                "log_mae": m["log_mae"],
                "log_mae_std": m["log_mae_std"],
                "vs_global_median": compare(losses[c.name], losses["global_median"], opts)[
                    "log_mae"
                ],
                "chosen": cv["chosen"].count(c.name),
            }
        )
    ranges = []
    for label, low, high in RANGES:
        rows = np.flatnonzero((truths >= low) & (truths < high))
        entry: dict[str, Any] = {"range": label, "n": int(rows.size)}
        for name in ["model", *BASELINES]:
            entry[name] = float(losses[name]["log"][rows].mean()) if rows.size else math.nan
        entry["share_of_model_error"] = float(
            losses["model"]["log"][rows].sum() / losses["model"]["log"].sum()
        )
        entry["vs_global_median"] = (
            compare(losses["model"], losses["global_median"], opts, rows)["log_mae"]
            if rows.size >= 5
            else None
        )
        ranges.append(entry)
    topics = []
    for topic in sorted(set(data.topics.tolist())):
        rows = np.flatnonzero(data.topics == topic)
        entry = {"topic": topic, "n": int(rows.size)}
        for name in ["model", *BASELINES]:
            entry[name] = float(losses[name]["log"][rows].mean())
        entry["vs_global_median"] = compare(losses["model"], losses["global_median"], opts, rows)[
            "log_mae"
        ]
        topics.append(entry)
    chosen_counts = {c.name: cv["chosen"].count(c.name) for c in cands}
    default = Candidate("full", False, "configured").name
    favourite = max(cands, key=lambda c: (chosen_counts[c.name], c.name == default)).name
    decision = {
        "default": default,
        "most_chosen": favourite,
        "most_chosen_minus_default": compare(losses[favourite], losses[default], opts)["log_mae"],
    }
    never_negative = int((preds["model"] < 0).any(axis=0).sum())
    log.info("int8 rule: the served candidate with fp32 and int8 embeddings on the same folds")
    churn_result = precision_churn(settings, records, unlabelled, lgb_settings, opts)
    return {
        "input": {
            "file": path.name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "rows": len(records),
        },
        "options": vars(opts) | {"candidates": len(cands), "outer_fits": opts.folds * opts.seeds},
        "lightgbm_settings": lgb_settings,
        "summary": summary,
        "chance_accuracy": chance,
        "differences": differences,
        "sweep": sweep,
        "chosen": chosen_counts,
        "decision": decision,
        "ranges": ranges,
        "topics": topics,
        "model_negative_rows": never_negative,
        "answer_models": answers,
        "negative_answers": int((truths < 0).sum()),
        "precision_churn": churn_result,
        "facts": facts(settings, data, cands),
        "seconds": round(time.perf_counter() - started, 1),
    }
