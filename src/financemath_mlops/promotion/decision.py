"""The promotion rule: the challenger becomes champion only if it wins beyond resampling noise.

Both models are scored on the challenger's holdout rows minus any row the champion trained on. The
challenger wins when the paired bootstrap 95 % interval of its per-row loss minus the champion's
(`intervals.py`) lies entirely below ``-evaluation.promotion_margin``; a point estimate
alone never promotes. The first version has no champion: it must beat the global median of its own
training answers the same way. With fewer rows than ``evaluation.min_promotion_rows`` (at least
10) promotion refuses and says why. n, the difference and the interval are logged to the
challenger's run. Moving `champion` keeps the old one as `previous-champion` (`registry rollback`)
and records both moves in the audit trail with this evidence as the reason (`registry history`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from financemath_mlops import runs
from financemath_mlops.config import EvaluationSettings
from financemath_mlops.intervals import PairedDifference, paired_bootstrap
from financemath_mlops.model.target import signed_log1p

log = logging.getLogger(__name__)
GLOBAL_MEDIAN = "the global median of its training answers"


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    champion_version: str | None
    challenger_score: float | None = None
    champion_score: float | None = None  # the comparator's: champion, or the global median
    n_rows: int = 0
    interval: PairedDifference | None = None
    comparator: str | None = None

    def line(self) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "not promoted"
        return f"promotion: version {self.challenger_version} {verdict}: {self.reason}"


def row_losses(predictions: np.ndarray, truths: np.ndarray, metric: str) -> np.ndarray:
    """Per-row losses whose mean (median for median_ae) orders models as the metric does."""
    if metric == "log_mae":
        return np.abs(signed_log1p(predictions) - signed_log1p(truths))
    if metric == "rmse":
        return (predictions - truths) ** 2
    return np.abs(predictions - truths)


def judge(
    challenger: np.ndarray,
    comparator: np.ndarray,
    truths: np.ndarray,
    cfg: EvaluationSettings,
    seed: int,
) -> tuple[bool, PairedDifference, str]:
    """Paired interval of challenger minus comparator; promoted only if it is all in favour.
    ``seed`` (training.seed) makes the resamples repeatable."""
    metric = cfg.promotion_metric
    interval = paired_bootstrap(
        row_losses(challenger, truths, metric),
        row_losses(comparator, truths, metric),
        samples=cfg.promotion_bootstrap,
        seed=seed,
        statistic="median" if metric == "median_ae" else "mean",
    )
    wins = interval.favours_a(cfg.promotion_margin)
    name = "squared error" if metric == "rmse" else metric
    margin = f" beyond the margin {cfg.promotion_margin:g}" if cfg.promotion_margin else ""
    text = (
        f"{name} difference {interval.text(3)} (paired bootstrap {interval.confidence:.0%}, "
        f"{cfg.promotion_bootstrap} resamples) on {interval.n} rows unseen by both: "
        + (f"entirely in its favour{margin}" if wins else f"not entirely in its favour{margin}")
    )
    return wins, interval, text


def _too_few(n: int, cfg: EvaluationSettings) -> str | None:
    minimum = cfg.min_promotion_rows
    if n >= minimum:
        return None
    return (
        f"only {n} holdout rows are unseen by both models (minimum {minimum}); promote by hand "
        "with `python -m financemath_mlops.registry promote VERSION --reason TEXT` if you have "
        "other evidence (the text goes into the audit trail)"
    )


def _versus_global_median(
    cfg: EvaluationSettings, challenger: runs.ModelRef, seed: int
) -> PromotionDecision:
    """The first version: it must beat the global median of its training answers on its holdout."""
    assert challenger.version and challenger.run_id
    metric = cfg.promotion_metric
    data = runs.load_run_data_in_tmp(challenger.run_id)
    rows = data.holdout
    refusal = _too_few(len(rows), cfg)
    if refusal:
        return PromotionDecision(
            False, f"there is no champion yet, and {refusal}", metric, challenger.version, None,
            n_rows=len(rows), comparator=GLOBAL_MEDIAN,
        )  # fmt: skip
    truths = np.array([float(r["ground_truth"]) for r in rows])
    predictions = runs.predict_records(challenger.uri, rows)
    median = np.full(len(rows), float(np.median(data.train_targets)))
    wins, interval, text = judge(predictions, median, truths, cfg, seed)
    return PromotionDecision(
        wins, f"there is no champion yet; versus {GLOBAL_MEDIAN}: {text}", metric,
        challenger.version, None, float(row_losses(predictions, truths, metric).mean()),
        float(row_losses(median, truths, metric).mean()), len(rows), interval, GLOBAL_MEDIAN,
    )  # fmt: skip


def decide(cfg: EvaluationSettings, challenger: runs.ModelRef, *, seed: int) -> PromotionDecision:
    """Compare the challenger with the current champion, or the first one with the median.
    Reads the promotion settings (``evaluation.promotion_*``, ``min_promotion_rows``) and the
    seed of the bootstrap; the tracking store is the one ``runs.configure`` pointed at."""
    assert challenger.name and challenger.version and challenger.run_id
    metric = cfg.promotion_metric
    champion = runs.alias_version(challenger.name, runs.CHAMPION)
    if champion is None:
        return _versus_global_median(cfg, challenger, seed)
    if str(champion.version) == str(challenger.version):
        return PromotionDecision(
            False, "it already is the champion", metric, challenger.version, str(champion.version)
        )
    mine = runs.load_run_data_in_tmp(challenger.run_id)
    theirs = runs.load_run_data_in_tmp(champion.run_id)
    seen_by_champion = set(theirs.train_ids)
    rows = [r for r in mine.holdout if r["question_id"] not in seen_by_champion]
    label = f"champion v{champion.version}"
    refusal = _too_few(len(rows), cfg)
    if refusal:
        return PromotionDecision(
            False, refusal, metric, challenger.version, str(champion.version),
            n_rows=len(rows), comparator=label,
        )  # fmt: skip
    truths = np.array([float(r["ground_truth"]) for r in rows])
    predictions = {
        "challenger": runs.predict_records(challenger.uri, rows),
        "champion": runs.predict_records(runs.version_uri(challenger.name, champion.version), rows),
    }
    wins, interval, text = judge(
        predictions["challenger"], predictions["champion"], truths, cfg, seed
    )
    scores = {k: float(row_losses(v, truths, metric).mean()) for k, v in predictions.items()}
    return PromotionDecision(
        wins, f"versus {label}: {text}", metric, challenger.version, str(champion.version),
        scores["challenger"], scores["champion"], len(rows), interval, label,
    )  # fmt: skip


def promote_if_better(
    cfg: EvaluationSettings, challenger: runs.ModelRef, *, seed: int
) -> PromotionDecision:
    """Decide, log the decision to the challenger's run, and move the alias when it wins."""
    decision = decide(cfg, challenger, seed=seed)
    tags = {
        "promotion.decision": "promoted" if decision.promoted else "kept",
        "promotion.reason": decision.reason[:5000],
        "promotion.metric": decision.metric,
        "promotion.champion_version": str(decision.champion_version),
        "promotion.comparator": str(decision.comparator),
    }
    metrics = {"promotion_rows": float(decision.n_rows)}
    if decision.interval is not None:
        metrics.update(
            {
                "promotion_difference": decision.interval.difference,
                "promotion_difference_low": decision.interval.low,
                "promotion_difference_high": decision.interval.high,
                f"promotion_challenger_{decision.metric}": float(decision.challenger_score),
                f"promotion_comparator_{decision.metric}": float(decision.champion_score),
            }
        )
    assert challenger.run_id
    runs.record_promotion(challenger.run_id, tags, metrics)
    if decision.promoted:
        assert challenger.name
        runs.move_champion(
            challenger.name,
            decision.challenger_version,
            reason=f"promotion evidence: {decision.reason}",
            action="promotion",
        )
    log.info("%s", decision.line())
    return decision
