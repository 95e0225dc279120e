"""Stages chain by what they were given (issue 22): the stage commands, one by one, on a scratch
chain with its own paths, while the default paths hold another data set and the store another
model. Every stage must use the inputs and the model of its own chain, or refuse and say why."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from financemath_mlops import runs
from financemath_mlops.atomic import file_sha256
from financemath_mlops.cli import run_main
from financemath_mlops.config import load_settings
from financemath_mlops.evaluation.__main__ import main as evaluation_main
from financemath_mlops.features.__main__ import main as features_main
from financemath_mlops.ingestion.__main__ import main as ingestion_main
from financemath_mlops.promotion.__main__ import main as promotion_main
from financemath_mlops.training.__main__ import main as training_main
from tests.conftest import TrainedModel
from tests.helpers import REPO_ROOT


def stage(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def in_default_project(
    trained_model: TrainedModel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_mlflow_uris: None,
) -> TrainedModel:
    """Work from a folder whose default data/ paths belong to another chain (the trained model's
    sample), with a copy of its store (which holds that chain's model): aliases moved here stay
    here."""
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    shutil.copyfile(trained_model.tracking_uri.removeprefix("sqlite:///"), store)
    monkeypatch.chdir(trained_model.workdir)
    for name, value in {
        "FMOPS_MLFLOW__TRACKING_URI": f"sqlite:///{store}",
        "FMOPS_PATHS__CACHE_DIR": str(REPO_ROOT / ".cache"),
        "FMOPS_TRAINING__CV_FOLDS": "3",
    }.items():
        monkeypatch.setenv(name, value)
    assert Path("data/interim/financemath.jsonl").is_file()
    assert Path("data/processed/finance_math_features.parquet").is_file()
    return trained_model


def test_each_stage_uses_the_inputs_and_the_model_of_its_own_chain_or_refuses(
    in_default_project: TrainedModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = in_default_project
    scratch = tmp_path / "scratch"
    records, features = scratch / "records.jsonl", scratch / "features.parquet"
    ingest = ["--source", "sample", "--rows", "120", "--seed", "5", "--output", str(records)]
    assert stage(ingestion_main, ingest, capsys)[0] == 0
    build = ["--input", str(records), "--output", str(features)]
    assert stage(features_main, build, capsys)[0] == 0
    code, _, err = stage(training_main, ["--features", str(features)], capsys)
    assert code == 0, err
    pointer = runs.read_trained_pointer(features)
    assert pointer is not None
    assert pointer.model_name == other.model_name  # the same registered name: a new version
    assert pointer.version != other.version
    assert pointer.features_sha256 == file_sha256(features)

    # Training read the records the scratch features were built from, not data/interim.
    scratch_rows = {r["question_id"]: r for r in read_jsonl(records)}
    holdout = runs.load_holdout_records(pointer.run_id, scratch / "run")
    assert holdout and all(scratch_rows[r["question_id"]] == r for r in holdout)

    metrics = scratch / "metrics.json"
    evaluate = ["--features", str(features), "--output", str(metrics)]
    code, _, err = stage(evaluation_main, evaluate, capsys)
    assert code == 0, err
    assert json.loads(metrics.read_text())["model"]["version"] == pointer.version
    code, out, err = stage(promotion_main, ["--features", str(features)], capsys)
    assert code == 0, err
    assert f"promotion: version {pointer.version} " in out

    # A table nothing was trained on: no guess, the flags are named.
    lone = scratch / "lone.parquet"
    lone.write_bytes(features.read_bytes())
    for main in (evaluation_main, promotion_main):
        code, _, err = stage(main, ["--features", str(lone)], capsys)
        assert code == 2
        assert "--model-uri" in err and str(lone) in err

    # Records changed since the features were built, a table changed since training: refused.
    with records.open("a", encoding="utf-8") as handle:
        handle.write("\n")
    code, _, err = stage(training_main, ["--features", str(features)], capsys)
    assert code == 2
    assert str(records) in err and str(features) in err
    features.write_bytes(features.read_bytes() + b"\0")
    code, _, err = stage(evaluation_main, ["--features", str(features)], capsys)
    assert code == 2
    assert "changed since training" in err and pointer.model_uri in err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_a_pointer_is_followed_only_into_the_store_it_names(
    in_default_project: TrainedModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29: trained with one store, then evaluation and promotion against another: they
    followed `models:/...-sample/N` of the pointer into the other store's version N. Stores are
    told apart by the run id: the store here is a copy of the one training used, so it holds the
    very run (the same model under another spelling); a pointer to another run is refused."""
    trained = in_default_project  # its pointer names the session store; the env a copy of it
    features = trained.features_path
    copy = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    here = runs.store_identity(copy)
    there = runs.read_trained_pointer(features)
    assert there is not None and there.tracking_uri == runs.store_identity(trained.tracking_uri)
    assert here != there.tracking_uri
    runs.configure(load_settings().mlflow)
    assert runs.model_trained_on(features, copy).run_id == trained.run_id  # recognised

    # Another store: there, the pointer's version N is another run than training registered.
    elsewhere = tmp_path / "elsewhere.parquet"
    elsewhere.write_bytes(features.read_bytes())
    runs.write_trained_pointer(elsewhere, dataclasses.replace(there, run_id="f" * 32))
    metrics = tmp_path / "metrics.json"
    refusals = []
    for main, argv in ((evaluation_main, ["--output", str(metrics)]), (promotion_main, [])):
        code, _, err = stage(main, [*argv, "--features", str(elsewhere)], capsys)
        assert code == 2, err
        assert "--tracking-uri" in err and "--model-uri" in err
        assert f"is run {trained.run_id}" in err
        refusals.append(err)
    assert not metrics.exists()
    for err in refusals:
        assert here in err and there.tracking_uri in err and there.model_uri in err

    # The same store spelt relative to the working directory is the same store.
    relative = Path(trained.tracking_uri.removeprefix("sqlite:///")).relative_to(trained.workdir)
    assert runs.store_identity(f"sqlite:///{relative}") == there.tracking_uri

    # The store it names, recreated: the version number now belongs to another run.
    lone = tmp_path / "lone.parquet"
    lone.write_bytes(features.read_bytes())
    runs.write_trained_pointer(
        lone, dataclasses.replace(there, run_id="0" * 32, tracking_uri=here)
    )  # fmt: skip
    code, _, err = stage(evaluation_main, ["--features", str(lone)], capsys)
    assert code == 2
    assert f"is now run {trained.run_id}, not run {'0' * 32}" in err and "recreated" in err


def test_features_beside_a_given_model_is_refused_not_ignored(
    in_default_project: TrainedModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29: `evaluation --model-uri M --features new.parquet` scored M's own holdout rows
    and said nothing of the table."""
    trained = in_default_project
    model = f"models:/{trained.model_name}/{trained.version}"
    metrics = tmp_path / "metrics.json"
    argv = ["--model-uri", model, "--features", str(trained.features_path)]
    for main, extra in ((evaluation_main, ["--output", str(metrics)]), (promotion_main, [])):
        code, _, err = stage(main, [*argv, *extra], capsys)
        assert code == 2
        assert "--features" in err and "would be ignored" in err and model in err
        assert "Drop --features" in err and "drop --model-uri" in err
    assert not metrics.exists()
