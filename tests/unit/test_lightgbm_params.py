"""training.lightgbm is read by LightGBM's own parser before any work, warnings as errors.

Each refusal names the parameter (and the closest real name for a typo) and the setting; what
model/trees.py (the served evaluator) cannot run is refused at the same point.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from financemath_mlops.config import Settings
from financemath_mlops.errors import StageError
from financemath_mlops.model.trees import output_link
from financemath_mlops.training.lightgbm_params import (
    REGRESSION_OBJECTIVES,
    SETTING,
    check_lightgbm_params,
)
from tests.helpers import REPO_ROOT

TUNED = Settings().training.lightgbm  # the built-in default (configs/default.yaml repeats it)


def refusal(params: dict) -> str:
    with pytest.raises(StageError) as caught:
        check_lightgbm_params({**TUNED, **params}, seed=42, threads=1)
    message = str(caught.value)
    assert message.startswith(SETTING) and "FMOPS_TRAINING__LIGHTGBM" in message
    assert "before cross-validation" in message
    return message


def test_the_shipped_parameters_pass_and_say_what_lightgbm_made_of_them():
    shipped = yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text())
    for params in (TUNED, shipped["training"]["lightgbm"]):
        checked = check_lightgbm_params(params, seed=42, threads=1)
        assert (checked.objective, checked.link) == ("regression_l1", "identity")
        assert checked.seconds < 1.0  # measured ~15 ms on 2 busy cores


def test_an_unknown_name_is_refused_with_the_closest_real_one():
    message = refusal({"objectiv": "poisson"})
    assert "objectiv: not a LightGBM parameter (did you mean 'objective'?)" in message
    assert "lerning_rate" in refusal({"lerning_rate": 0.1})
    assert "did you mean 'learning_rate'?" in refusal({"lerning_rate": 0.1})


def test_an_unknown_objective_value_is_refused_naming_it_not_a_traceback():
    message = refusal({"objective": "poissn"})
    assert "objective='poissn'" in message
    assert "Unknown objective type name: poissn (did you mean 'poisson'?)" in message


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"num_leaves": -3}, "num_leaves=-3"),
        ({"learning_rate": "fast"}, "learning_rate='fast'"),
        ({"n_estimators": "50"}, "n_estimators='50'"),
        ({"n_estimators": 0}, "n_estimators=0"),
        ({"early_stopping_round": 5}, "early_stopping_round=5"),  # no validation set in fit
    ],
)
def test_a_bad_value_is_refused_naming_its_parameter(params: dict, named: str):
    message = refusal(params)
    assert named in message
    assert ".cpp, line" not in message  # LightGBM's source location is dropped


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"bagging_fraction": 0.7}, "subsample and bagging_fraction"),  # beside the file's
        ({"num_iterations": 50}, "n_estimators and num_iterations"),
        ({"lambda_l2": 2.0}, "reg_lambda and lambda_l2"),
    ],
)
def test_two_aliases_of_one_parameter_are_refused_naming_both(params: dict, names: str):
    message = refusal(params)
    assert names in message and "keep one" in message
    default = names.split(" and ")[0]  # the tuned default's name: how to remove it
    assert f"{default}: null in the file" in message


@pytest.mark.parametrize(
    ("params", "setting"),
    [
        ({"seed": 7}, "training.seed"),
        ({"random_state": 7}, "training.seed"),
        ({"n_jobs": 4}, "training.threads"),
        ({"num_threads": 4}, "training.threads"),
        ({"verbose": 1}, "remove it"),
    ],
)
def test_what_the_pipeline_sets_from_its_own_settings_is_refused(params: dict, setting: str):
    assert setting in refusal(params)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"linear_tree": True}, "cannot evaluate linear trees; remove linear_tree"),
        ({"linear_tree": True, "objective": "regression"}, "cannot evaluate linear trees"),
        ({"linear_trees": "true"}, "cannot evaluate linear trees"),
        ({"categorical_feature": [0]}, "cannot evaluate categorical splits"),
        ({"objective": "binary"}, "not a regression objective"),
        ({"objective": "multiclass", "num_class": 3}, "not a regression objective"),
        ({"objective": "lambdarank"}, "not a regression objective"),
    ],
)
def test_what_the_served_evaluator_cannot_run_is_refused_saying_what_to_change(
    params: dict, reason: str
):
    message = refusal(params)
    assert reason in message
    assert next(iter(params)) in message


def test_every_problem_is_listed_at_once():
    message = refusal({"objectiv": "poisson", "bagging_fraction": 0.5, "linear_tree": True})
    assert "3 problems" in message
    for name in ("objectiv", "bagging_fraction", "linear_tree"):
        assert name in message


@pytest.mark.parametrize(
    "params",
    [
        {"objective": "poisson"},
        {"objective": "huber", "alpha": 2.0},
        {"objective": "regression", "reg_sqrt": True},
        {"objective": "quantile", "alpha": 0.3},
        {"objective": "mape"},
        {"objective": "gamma"},
        {"boosting": "dart"},
        {"boosting": "rf", "subsample": 0.5},
        {"data_sample_strategy": "goss", "subsample": 1.0, "subsample_freq": 0},
        {"min_child_samples": 500},  # more than the dummy rows: the data's business, not ours
        {"objective": "l2", "monotone_constraints": [1] + [0] * 411},  # one per feature column
    ],
)
def test_servable_regression_settings_pass(params: dict):
    checked = check_lightgbm_params({**TUNED, **params}, seed=42, threads=1)
    assert checked.link in ("identity", "square", "exp")


def test_every_regression_objective_has_an_output_link_in_the_served_evaluator():
    for objective in REGRESSION_OBJECTIVES:
        assert output_link(objective) in ("identity", "exp")


def test_lightgbm_logger_is_restored_and_its_warnings_collected_not_printed(
    capfd: pytest.CaptureFixture[str],
):
    from lightgbm import basic

    def registered() -> tuple:
        return basic._LOGGER, basic._INFO_METHOD_NAME, basic._WARNING_METHOD_NAME

    before = registered()
    refusal({"objective": "poissn"})
    refusal({"objectiv": "poisson"})
    check_lightgbm_params(TUNED, seed=42, threads=1)
    after = registered()
    assert after == before
    # Warnings go to the check's collector (and into its message), not to the terminal; a
    # LightGBM [Fatal] line (poissn) is LightGBM's own print before it raises, left as it is.
    printed = capfd.readouterr()
    assert "[LightGBM] [Warning]" not in printed.out + printed.err


def test_the_check_reads_no_data_and_writes_nothing(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_lightgbm_params(TUNED, seed=42, threads=1)
    assert list(tmp_path.iterdir()) == []
