"""Promotion against a real MLflow store: evidence logged on the run, no win without an interval."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from financemath_mlops import runs
from financemath_mlops.promotion.decision import GLOBAL_MEDIAN, promote_if_better
from tests.conftest import TrainedModel

pytestmark = pytest.mark.integration


def test_first_version_was_promoted_only_after_beating_the_global_median(
    trained_model: TrainedModel,
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained_model.tracking_uri, trained_model.tracking_uri)
    run = client.get_run(trained_model.run_id).data
    assert run.tags["promotion.decision"] == "promoted"
    assert run.tags["promotion.comparator"] == GLOBAL_MEDIAN
    assert "there is no champion yet" in run.tags["promotion.reason"]
    assert run.metrics["promotion_rows"] >= 10
    low, high = run.metrics["promotion_difference_low"], run.metrics["promotion_difference_high"]
    assert low <= run.metrics["promotion_difference"] <= high < 0
    champion = client.get_model_version_by_alias(trained_model.model_name, "champion")
    assert str(champion.version) == trained_model.version


def test_an_identical_challenger_is_not_promoted(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    """Same model registered again: difference 0 on every row, so no interval in its favour."""
    import mlflow

    source = Path(trained_model.tracking_uri.removeprefix("sqlite:///"))
    copy = tmp_path / "mlflow.db"
    shutil.copy(source, copy)  # a copy of the store: the session's registry stays as it is
    settings = trained_model.settings.model_copy(deep=True)
    settings.mlflow.tracking_uri = f"sqlite:///{copy}"
    runs.configure(settings.mlflow)
    try:
        version = mlflow.register_model(
            f"runs:/{trained_model.run_id}/model", trained_model.model_name
        ).version
        decision = promote_if_better(
            settings.evaluation,
            runs.resolve(f"models:/{trained_model.model_name}/{version}"),
            seed=settings.training.seed,
        )
        assert not decision.promoted
        assert decision.interval is not None and decision.interval.difference == 0.0
        assert decision.n_rows >= 10 and "not entirely in its favour" in decision.reason
        champion = runs.alias_version(trained_model.model_name, runs.CHAMPION)
        assert str(champion.version) == trained_model.version
    finally:
        runs.configure(trained_model.settings.mlflow)
