"""Each pipeline stage run from one whole ``Settings``: the slicing into the sections a stage's
entry function takes, written once.

A stage's entry function shows what it reads (``ingest(s.ingestion, ...)``); the flow's tasks,
the test fixtures and the benchmarks hold a whole ``Settings`` and call these instead. No Prefect
here, and each stage is imported when it runs: importing this module starts nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from financemath_mlops import runs

if TYPE_CHECKING:
    from financemath_mlops.config import Settings
    from financemath_mlops.features.build import FeatureSummary
    from financemath_mlops.ingestion.stage import IngestionSummary
    from financemath_mlops.promotion.decision import PromotionDecision
    from financemath_mlops.training.train import TrainingSummary


def ingest_stage(settings: Settings) -> IngestionSummary:
    from financemath_mlops.ingestion import ingest

    return ingest(settings.ingestion, settings.ingestion_output, settings.paths.hf_cache_dir)


def features_stage(settings: Settings, *, validated_elsewhere: bool = False) -> FeatureSummary:
    """Without a progress bar (the stage's CLI shows one)."""
    from financemath_mlops.features.build import build_features

    return build_features(
        settings.features,
        settings.paths,
        settings.features_input,
        settings.features_output,
        show_progress=False,
        validated_elsewhere=validated_elsewhere,
    )


def train_stage(settings: Settings) -> TrainingSummary:
    from financemath_mlops.training.train import train

    return train(
        settings.training, settings.mlflow, settings.features, settings.paths,
        settings.training_features, settings.features_input,
    )  # fmt: skip


def evaluate_stage(settings: Settings, model_uri: str) -> dict[str, Any]:
    """The holdout report of ``model_uri`` in the configured store (metrics.json written)."""
    from financemath_mlops.evaluation.evaluate import evaluate

    runs.configure(settings.mlflow)
    return evaluate(runs.resolve(model_uri), settings.metrics_output, uri=model_uri)


def promote_stage(settings: Settings, model_uri: str) -> PromotionDecision:
    """Promote ``model_uri`` if it beats the champion (the alias moved when it does)."""
    from financemath_mlops.promotion.decision import promote_if_better

    runs.configure(settings.mlflow)
    return promote_if_better(
        settings.evaluation, runs.resolve(model_uri), seed=settings.training.seed
    )
