"""``training.lightgbm`` checked before any work: by LightGBM's own parser, and for serving.

:func:`~financemath_mlops.training.fit.fit_booster` runs LightGBM quiet (``verbose=-1``): a name
LightGBM does not know is ignored without a word, of two aliases of one parameter it keeps one,
and a bad value is a LightGBM traceback once CV has started. :func:`check_lightgbm_params` builds
the same ``LGBMRegressor`` (:func:`~financemath_mlops.training.fit.regressor_params`) on a tiny
dummy dataset with LightGBM's warnings on and collected, and stops it after its first tree: by
then LightGBM has parsed every parameter, built the objective and run the callbacks the
parameters ask for (early stopping), and ``model/trees.py`` can read the tree. Every warning and
error becomes one :class:`StageError` (exit 2) naming the parameter, the closest real name for a
typo, and the setting. Refused at the same point: what ``model/trees.py`` (the served evaluator)
cannot run (linear trees, categorical splits, an objective without an output link there) and
objectives that are not regression (the pipeline fits a regressor and serves its value).
Cost: about 27 ms in the training stage (docs/architecture.md).
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from financemath_mlops.errors import StageError
from financemath_mlops.names import closest
from financemath_mlops.training.fit import regressor_params

SETTING = (
    "training.lightgbm (training: lightgbm: in the config file, FMOPS_TRAINING__LIGHTGBM or "
    "FMOPS_TRAINING__LIGHTGBM__<NAME>; `python -m financemath_mlops.config show` says which)"
)

# LightGBM's regression objectives, by the name a model file's header gives them, with the other
# names that reach them. model/trees.py has an output link for each (tests/unit pins it).
REGRESSION_OBJECTIVES: dict[str, tuple[str, ...]] = {
    "regression": (
        "regression_l2", "l2", "mean_squared_error", "mse", "l2_root", "root_mean_squared_error",
        "rmse",
    ),
    "regression_l1": ("l1", "mean_absolute_error", "mae"),
    "huber": (), "fair": (), "poisson": (), "quantile": (),
    "mape": ("mean_absolute_percentage_error",),
    "gamma": (), "tweedie": (),
}  # fmt: skip
# Classification and ranking: LightGBM fits them, the pipeline (a regressor on a real-valued
# target, served as a value) does not.
OTHER_OBJECTIVES: dict[str, tuple[str, ...]] = {
    "binary": (), "multiclass": ("softmax",), "multiclassova": ("multiclass_ova", "ova", "ovr"),
    "cross_entropy": ("xentropy",), "cross_entropy_lambda": ("xentlambda",), "lambdarank": (),
    "rank_xendcg": ("xendcg", "xe_ndcg", "xe_ndcg_mart", "xendcg_mart"),
}  # fmt: skip
# LightGBM parameters the pipeline sets from its own settings (fit.regressor_params): an alias
# of one in training.lightgbm would silently win over the setting, or lose to it.
PIPELINE_OWNED = {
    "seed": "set training.seed (FMOPS_TRAINING__SEED) instead",
    "num_threads": "set training.threads (FMOPS_TRAINING__THREADS) instead",
    "verbosity": "remove it: training runs LightGBM quiet and checks its warnings here, before CV",
}
# Warnings about the dummy dataset's size, not about the parameters.
DATA_WARNINGS = (
    "There are no meaningful features",
    "Stopped training because there are no more leaves",
    "No further splits with positive gain",
)
DUMMY_ROWS = 64
_UNKNOWN = re.compile(r"Unknown parameter:? (\S+)")
_IGNORED = re.compile(r"(\w+) is set=.*?, (\w+)=.* will be ignored")
_UNKNOWN_OBJECTIVE = re.compile(r"Unknown objective type name: (\S+)")
_SOURCE_LOCATION = re.compile(r"\s+at \S+\.(?:cpp|hpp|h), line \d+\s*\.?\s*$")


@dataclass(frozen=True)
class CheckedParams:
    """What LightGBM made of the parameters: the model header's objective and its served link."""

    objective: str
    link: str
    seconds: float


@dataclass
class _Outcome:
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    model_text: str | None = None  # the booster after its first tree: resolved parameters


def check_lightgbm_params(
    params: dict[str, Any], seed: int, threads: int | None = None, width: int | None = None
) -> CheckedParams:
    """Refuse ``params`` (``training.lightgbm``) unless LightGBM reads every one of them without
    a warning and the served evaluator can run what they train; the StageError lists each
    problem. ``width``: features per row (default: the feature table's, so per-feature settings
    such as ``monotone_constraints`` are checked against it). Touches no data and no store."""
    import lightgbm  # noqa: F401  (its import, ~1 s, is training's anyway: not the check's cost)

    started = time.perf_counter()
    if width is None:
        from financemath_mlops.features.rows import FEATURE_COLUMNS

        width = len(FEATURE_COLUMNS)
    problems, skipped = _problems_by_name(params)
    rest = {key: value for key, value in params.items() if key not in skipped}
    outcome = _parse(rest, seed, threads, width)
    problems += _parser_problems(outcome, rest, seed, threads, width)
    objective, link = "", ""
    if not problems and outcome.model_text is not None:
        objective, link, served = _served_problems(outcome.model_text)
        problems += served
    if problems:
        raise StageError(
            f"{SETTING}: {len(problems)} problem{'s' if len(problems) > 1 else ''}, found before "
            "cross-validation (nothing was trained or logged):\n"
            + "\n".join(f"  - {problem}" for problem in problems)
        )
    return CheckedParams(objective, link, time.perf_counter() - started)


def lightgbm_refusal(exc: BaseException) -> str:
    """LightGBM's error message without its C++ source location."""
    return _SOURCE_LOCATION.sub("", str(exc).strip()) or type(exc).__name__


def _aliases() -> dict[str, str]:
    """Every LightGBM parameter name and alias -> the parameter's main name (LightGBM's table)."""
    from lightgbm.basic import _ConfigAliases

    _ConfigAliases.get("objective")  # loads the table from the library (LGBM_DumpParamAliases)
    table = _ConfigAliases.aliases or {}
    return {alias: main for main, names in table.items() for alias in names}


def _known_names() -> list[str]:
    import inspect

    import lightgbm as lgb

    wrapper = inspect.signature(lgb.LGBMRegressor.__init__).parameters
    return sorted(set(_aliases()) | {name for name in wrapper if name not in ("self", "kwargs")})


def _did_you_mean(name: str, names: list[str]) -> str:
    match = closest(name, names)
    return f" (did you mean {match!r}?)" if match else ""


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "-")
    return bool(value)


def _objective_name(value: Any) -> str:
    return str(value).split()[0].lower() if str(value).split() else ""


def _problems_by_name(params: dict[str, Any]) -> tuple[list[str], set[str]]:
    """What the names alone refuse (LightGBM's alias table); the keys to leave out of the parse."""
    main_of = _aliases()
    problems: list[str] = []
    skipped: set[str] = set()
    groups: dict[str, list[str]] = {}
    for key in params:
        main = main_of.get(key)
        if main in PIPELINE_OWNED:
            problems.append(f"{key}: sets LightGBM's {main}, which the pipeline sets; "
                            f"{PIPELINE_OWNED[main]}")  # fmt: skip
            skipped.add(key)
        elif main is not None:
            groups.setdefault(main, []).append(key)
    for main, keys in groups.items():
        if len(keys) > 1:
            problems.append(
                f"{' and '.join(keys)}: {len(keys)} names for LightGBM's {main}; LightGBM would "
                f"use one and ignore the other: keep one (a null removes a key the defaults set: "
                f'{keys[0]}: null in the file, or {{"{keys[0]}": null}} in the env JSON)'
            )
            skipped.update(keys[1:])
    regression = ", ".join(REGRESSION_OBJECTIVES)
    others = {name for main, names in OTHER_OBJECTIVES.items() for name in (main, *names)}
    for key, value in params.items():
        main = main_of.get(key)
        if main == "linear_tree" and _truthy(value):
            problems.append(
                f"{key}={value!r}: model/trees.py (the served evaluator) cannot evaluate linear "
                f"trees; remove {key}"
            )
            skipped.add(key)
        elif main == "categorical_feature":
            problems.append(
                f"{key}={value!r}: model/trees.py (the served evaluator) cannot evaluate "
                f"categorical splits, and the feature table is numeric; remove {key}"
            )
            skipped.add(key)
        elif main == "objective" and _objective_name(value) in others:
            problems.append(
                f"{key}={value!r}: not a regression objective; the pipeline fits a regressor on a "
                f"real-valued target and serves its value: use one of {regression}"
            )
            skipped.add(key)
    return problems, skipped


class _Collector:
    """A LightGBM logger that keeps the warnings (LightGBM's C callback must never raise)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def info(self, message: str) -> None:  # native messages all arrive here, tagged
        message = str(message).strip()
        if message.startswith("[LightGBM] [Warning]"):
            self.warnings.append(message.removeprefix("[LightGBM] [Warning]").strip())

    def warning(self, message: str) -> None:  # the Python package's own warnings
        self.warnings.append(str(message).strip())


class _Stopped(Exception):
    pass


class _StopAfterFirstTree:
    """A LightGBM callback, after LightGBM's own: keep the model text (its resolved parameters
    and one tree), then stop."""

    before_iteration = False

    def __init__(self) -> None:
        self.order = 1_000  # on the instance: LightGBM gives callbacks without one a low order
        self.model_text: str | None = None

    def __call__(self, env: Any) -> None:
        self.model_text = env.model.model_to_string()
        raise _Stopped


def _parse(params: dict[str, Any], seed: int, threads: int | None, width: int) -> _Outcome:
    """Build the regressor on dummy data with warnings on (verbosity 0), stopped before a tree."""
    import lightgbm as lgb
    from lightgbm import basic

    outcome = _Outcome()
    collector, stop = _Collector(), _StopAfterFirstTree()
    features = np.random.default_rng(0).normal(size=(DUMMY_ROWS, width))
    target = 1.5 + 0.4 * np.tanh(features[:, 0])  # in (1, 2): valid for every regression objective
    previous = (basic._LOGGER, basic._INFO_METHOD_NAME, basic._WARNING_METHOD_NAME)
    lgb.register_logger(collector)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model = lgb.LGBMRegressor(**regressor_params(params, seed, threads, verbose=0))
                model.fit(features, target, callbacks=[stop])
                stop.model_text = model.booster_.model_to_string()  # stopped by LightGBM itself
            except _Stopped:
                pass
            except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
                outcome.error = lightgbm_refusal(exc)
    finally:
        lgb.register_logger(*previous)
    own = [str(w.message) for w in caught if f"{os.sep}lightgbm{os.sep}" in str(w.filename)]
    outcome.warnings = list(dict.fromkeys(collector.warnings + own))
    outcome.model_text = stop.model_text
    return outcome


def _parser_problems(
    outcome: _Outcome, params: dict[str, Any], seed: int, threads: int | None, width: int
) -> list[str]:
    problems: list[str] = []
    given = set(params) | set(regressor_params({}, seed, threads))
    names = _known_names()
    for message in outcome.warnings:
        unknown, ignored = _UNKNOWN.search(message), _IGNORED.search(message)
        if message.startswith(DATA_WARNINGS):
            continue
        if unknown:
            name = unknown.group(1)
            problems.append(
                f"{name}: not a LightGBM parameter{_did_you_mean(name, names)}; LightGBM would ignore it"
            )
        elif ignored:
            # The scikit-learn wrapper passes its own defaults (boosting_type, subsample, ...):
            # only two names the pipeline or the setting gave are a collision.
            if {ignored.group(1), ignored.group(2)} <= given:
                problems.append(f"{ignored.group(1)} and {ignored.group(2)}: LightGBM: {message}")
        else:
            problems.append(f"LightGBM warns: {message}")
    if outcome.error is not None:
        problems += _error_problems(outcome.error, params, seed, threads, width)
    return problems


def _error_problems(
    error: str, params: dict[str, Any], seed: int, threads: int | None, width: int
) -> list[str]:
    """Name the parameter(s) behind LightGBM's error: each one alone, failing the same way."""
    culprits = {}
    if len(params) > 1:
        for key, value in params.items():
            alone = _parse({key: value}, seed, threads, width).error
            if alone is not None:
                culprits[key] = alone
    elif params:
        culprits = {next(iter(params)): error}
    if not culprits:
        keys = ", ".join(params) or "(none)"
        return [f"LightGBM refuses these parameters together ({keys}): {error}"]
    objectives = [name for main, aliases in REGRESSION_OBJECTIVES.items()
                  for name in (main, *aliases)]  # fmt: skip
    problems = []
    for key, message in culprits.items():
        unknown = _UNKNOWN_OBJECTIVE.search(message)
        hint = _did_you_mean(unknown.group(1), objectives) if unknown else ""
        problems.append(f"{key}={params[key]!r}: LightGBM refuses it: {message}{hint}")
    return problems


def _served_problems(model_text: str) -> tuple[str, str, list[str]]:
    """What LightGBM resolved, against what model/trees.py evaluates."""
    from financemath_mlops.model.trees import TreeEnsemble, TreeModelError, output_link

    header = dict(
        line.split("=", 1) for line in model_text.split("end of trees")[0].splitlines()
        if "=" in line
    )  # fmt: skip
    resolved = dict(re.findall(r"^\[(\w+): ?(.*)\]$", model_text, flags=re.MULTILINE))
    objective = header.get("objective", "")
    problems = []
    link = ""
    if _objective_name(objective) not in REGRESSION_OBJECTIVES:
        problems.append(
            f"objective: LightGBM resolves it to {objective!r}, not a regression objective: use "
            f"one of {', '.join(REGRESSION_OBJECTIVES)}"
        )
    else:
        try:
            link = output_link(objective)
        except TreeModelError as exc:
            problems.append(f"objective {objective!r}: {exc}")
    if resolved.get("linear_tree", "0").strip() not in ("", "0"):
        problems.append("linear_tree: model/trees.py cannot evaluate linear trees; remove it")
    if resolved.get("categorical_feature", "").strip():
        problems.append(
            "categorical_feature: model/trees.py cannot evaluate categorical splits; remove it"
        )
    if not problems:
        try:
            TreeEnsemble(model_text)  # the served evaluator reads the first tree
        except TreeModelError as exc:
            problems.append(f"model/trees.py cannot evaluate the model these train: {exc}")
    return objective, link, problems
