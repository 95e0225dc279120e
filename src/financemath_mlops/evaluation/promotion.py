"""Promotion on evidence: the challenger becomes champion only if it wins on rows neither saw.

Both models are scored on the challenger's holdout rows minus any row the champion trained on.
With fewer such rows than configured, promotion refuses and says why. The decision and both
numbers are logged to the challenger's run. Moving `champion` keeps the old one as
`previous-champion`, which `registry rollback` returns to.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from financemath_mlops import tracking
from financemath_mlops.config import Settings
from financemath_mlops.evaluation.evaluate import load_run_data, predict_records
from financemath_mlops.evaluation.metrics import regression_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    metric: str
    challenger_version: str
    champion_version: str | None
    challenger_score: float | None = None
    champion_score: float | None = None
    n_rows: int = 0

    def line(self) -> str:
        verdict = "PROMOTED to champion" if self.promoted else "not promoted"
        return f"promotion: version {self.challenger_version} {verdict}: {self.reason}"


def move_champion(name: str, version: str) -> None:
    """Point `champion` at version, keeping the current one as `previous-champion`."""
    current = tracking.alias_version(name, tracking.CHAMPION)
    if current is not None and str(current.version) != str(version):
        tracking.set_alias(name, tracking.PREVIOUS_CHAMPION, current.version)
    tracking.set_alias(name, tracking.CHAMPION, version)


def decide(settings: Settings, challenger: tracking.ModelRef) -> PromotionDecision:
    """Compare the challenger with the current champion (no side effects)."""
    assert challenger.name and challenger.version and challenger.run_id
    metric = settings.evaluation.promotion_metric
    champion = tracking.alias_version(challenger.name, tracking.CHAMPION)
    if champion is None:
        return PromotionDecision(True, "there is no champion yet", metric, challenger.version, None)
    if str(champion.version) == str(challenger.version):
        return PromotionDecision(
            False, "it already is the champion", metric, challenger.version, str(champion.version)
        )
    with tempfile.TemporaryDirectory(prefix="fmops-promo-") as tmp:
        mine = load_run_data(challenger.run_id, Path(tmp) / "challenger")
        theirs = load_run_data(champion.run_id, Path(tmp) / "champion")
    seen_by_champion = set(theirs.train_ids)
    rows = [r for r in mine.holdout if r["question_id"] not in seen_by_champion]
    minimum = settings.evaluation.min_promotion_rows
    if len(rows) < minimum:
        return PromotionDecision(
            False,
            f"only {len(rows)} holdout rows are unseen by both models (minimum {minimum}); "
            "promote by hand with `python -m financemath_mlops.registry promote VERSION` if you "
            "have other evidence",
            metric, challenger.version, str(champion.version), n_rows=len(rows),
        )  # fmt: skip
    truths = np.array([float(r["ground_truth"]) for r in rows])
    scores = {}
    for label, uri in (
        ("challenger", challenger.uri),
        ("champion", f"models:/{challenger.name}/{champion.version}"),
    ):
        predictions = predict_records(tracking.load_pyfunc(uri), rows)
        scores[label] = regression_metrics(predictions, truths)[metric]
    wins = scores["challenger"] < scores["champion"]
    reason = (
        f"{metric} {scores['challenger']:.4g} vs champion v{champion.version} "
        f"{scores['champion']:.4g} on {len(rows)} rows unseen by both"
    )
    return PromotionDecision(
        wins, reason, metric, challenger.version, str(champion.version),
        scores["challenger"], scores["champion"], len(rows),
    )  # fmt: skip


def promote_if_better(settings: Settings, challenger: tracking.ModelRef) -> PromotionDecision:
    """Decide, log the decision to the challenger's run, and move the alias when it wins."""
    import mlflow

    decision = decide(settings, challenger)
    with mlflow.start_run(run_id=challenger.run_id):
        mlflow.set_tags(
            {
                "promotion.decision": "promoted" if decision.promoted else "kept",
                "promotion.reason": decision.reason[:5000],
                "promotion.metric": decision.metric,
                "promotion.champion_version": str(decision.champion_version),
            }
        )
        if decision.challenger_score is not None and decision.champion_score is not None:
            mlflow.log_metrics(
                {
                    f"promotion_challenger_{decision.metric}": decision.challenger_score,
                    f"promotion_champion_{decision.metric}": decision.champion_score,
                    "promotion_rows": decision.n_rows,
                }
            )
    if decision.promoted:
        assert challenger.name
        move_champion(challenger.name, decision.challenger_version)
    log.info("%s", decision.line())
    return decision
