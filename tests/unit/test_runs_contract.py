"""The run contract (`runs/`): one spelling of model URIs and artefact names, alias moves that
keep the previous champion, and no stage outside `runs/` that builds either."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from financemath_mlops import runs
from financemath_mlops.atomic import file_sha256
from financemath_mlops.cli import run_main
from financemath_mlops.config import load_settings
from financemath_mlops.registry.__main__ import main as registry_main
from financemath_mlops.runs import contract
from tests.helpers import REPO_ROOT, seeded_store

SRC = REPO_ROOT / "src" / "financemath_mlops"
# What only a training run holds (the features manifest is also the features stage's own file).
RUN_ONLY_ARTEFACTS = (
    contract.TRAIN_IDS,
    contract.HOLDOUT_IDS,
    contract.TRAINING_FEATURES,
    contract.HOLDOUT_RECORDS,
)


def test_served_uri_follows_the_alias_unless_a_uri_is_configured() -> None:
    settings = load_settings(overrides={"serving": {"model_name": "m", "alias": "champion"}})
    assert runs.served_uri(settings.serving) == "models:/m@champion"
    pinned = load_settings(overrides={"serving": {"model_uri": "models:/m/3"}})
    assert runs.served_uri(pinned.serving) == "models:/m/3"


def test_the_challenger_is_what_training_registered_from_the_given_table(tmp_path: Path) -> None:
    features = tmp_path / "features.parquet"
    features.write_bytes(b"a feature table")
    settings = load_settings(overrides={"training": {"features": str(features)}})
    with pytest.raises(runs.TrackingError, match="pass --model-uri"):
        runs.challenger_uri(settings)  # nothing trained on it: no guess
    pointer = runs.TrainedPointer(
        "run", "models:/m/4", "m", "4", str(features), file_sha256(features),
        runs.store_identity(settings.mlflow.tracking_uri),
    )  # fmt: skip
    runs.write_trained_pointer(features, pointer)
    assert runs.trained_pointer_path(features) == tmp_path / "features.trained.json"
    assert runs.challenger_uri(settings) == "models:/m/4"
    chosen = settings.model_copy(
        update={"evaluation": settings.evaluation.model_copy(update={"model_uri": "runs:/r/m"})}
    )
    assert runs.challenger_uri(chosen) == "runs:/r/m"
    features.write_bytes(b"another feature table")
    with pytest.raises(runs.TrackingError, match="changed since training registered models:/m/4"):
        runs.challenger_uri(settings)


def test_only_models_and_runs_uris_need_the_store() -> None:
    assert runs.is_tracked_uri("models:/m@champion")
    assert runs.is_tracked_uri(runs.version_uri("m", 2))
    assert runs.is_tracked_uri("runs:/abc/model")
    assert not runs.is_tracked_uri("models/serving")
    assert not runs.is_tracked_uri("file:///srv/model")


def _python_files_outside_runs() -> list[Path]:
    return [p for p in sorted(SRC.rglob("*.py")) if "runs" not in p.relative_to(SRC).parts[:1]]


def test_no_stage_builds_a_model_uri_or_names_a_run_artefact() -> None:
    """Help texts may show `models:/NAME@ALIAS`; building one (an f-string) is the contract's."""
    names = {*RUN_ONLY_ARTEFACTS, *(a.rpartition("/")[2] for a in RUN_ONLY_ARTEFACTS)}
    found = []
    for path in _python_files_outside_runs():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                head = node.values[0] if node.values else None
                if isinstance(head, ast.Constant) and str(head.value).startswith("models:/"):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} builds a models:/ URI")
            elif isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(SRC)}:{node.lineno} names {node.value!r}")
    assert len(_python_files_outside_runs()) > 50
    assert not found, "\n".join(found)


def _version(alias: str) -> str:
    found = runs.alias_version("m", alias)
    assert found is not None, f"no {alias}"
    return str(found.version)


@pytest.fixture()
def registry(tmp_path: Path, restore_mlflow_uris: None) -> tuple[str, list[str]]:
    """A fresh SQLite registry with one model and three versions; returns (tracking URI, versions)."""
    uri = seeded_store(tmp_path / "mlflow.db")
    runs.configure(load_settings(overrides={"mlflow": {"tracking_uri": uri}}).mlflow)
    client = runs.client()
    client.create_registered_model("m")
    source = tmp_path / "model"
    source.mkdir()
    versions = [str(client.create_model_version("m", str(source)).version) for _ in range(3)]
    return uri, versions


def test_moving_the_champion_keeps_the_previous_one_and_rollback_swaps_them(
    registry: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, (v1, v2, v3) = registry
    runs.set_challenger("m", v3)
    runs.move_champion("m", v1)
    assert runs.alias_version("m", runs.PREVIOUS_CHAMPION) is None  # nothing was replaced
    runs.move_champion("m", v2)
    runs.move_champion("m", v2)  # moving to the same version keeps the previous champion
    assert _version(runs.CHAMPION) == v2
    assert _version(runs.PREVIOUS_CHAMPION) == v1

    rollback = ["--tracking-uri", uri, "--name", "m", "rollback", "--reason", "v2 misbehaves"]
    assert run_main(registry_main, rollback) == 0
    assert f"champion -> version {v1} (was {v2})" in capsys.readouterr().out
    assert _version(runs.CHAMPION) == v1
    assert _version(runs.PREVIOUS_CHAMPION) == v2
    assert runs.rollback_champion("m") == (v2, v1)  # a second rollback undoes the first
    assert _version(runs.CHALLENGER) == v3  # never touched


def test_rollback_without_a_previous_champion_fails_with_a_reason(
    registry: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    uri, (v1, _, _) = registry
    runs.move_champion("m", v1)
    rollback = ["--tracking-uri", uri, "--name", "m", "rollback", "--reason", "undo v1"]
    assert run_main(registry_main, rollback) == 2
    assert "no previous champion" in capsys.readouterr().err
    assert _version(runs.CHAMPION) == v1
