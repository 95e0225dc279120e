"""The team set-up, for real: MLflow on PostgreSQL with artefacts proxied to S3 (moto), driven
through the whole pipeline and by two trainers at once.

A slower journey (about 4 minutes on 2 cores: PostgreSQL, MLflow's schema migrations, model
uploads), so it runs only with FMOPS_TEST_TEAM_STORES=1; `.ci/run` sets it:

    FMOPS_TEST_TEAM_STORES=1 .venv/bin/pytest tests/integration/test_team_stores*.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TrainedModel, pipeline_settings
from tests.helpers import REPO_ROOT, VENV_BIN
from tests.integration.team_stores import (
    JOURNEY,
    QUESTION,
    Postgres,
    TeamStore,
    client_env,
    copy_features,
    serve_and_predict,
    team_store,
)

pytestmark = JOURNEY

EXPERIMENT = "financemath-team"
# What every training run logs besides the model (training/train.py): a run missing one of
# these was cut short.
RUN_FILES = (
    "feature_columns.json",
    "split/train_ids.json",
    "split/holdout_ids.json",
)  # the model itself is a logged model (MLflow 3), loaded and run below


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamStore]:
    with team_store(tmp_path_factory.mktemp("team-stores"), EXPERIMENT) as store:
        yield store


def db_rows(postgres: Postgres, query: str, *args: object) -> list[tuple]:
    import psycopg

    with psycopg.connect(postgres.uri("mlflow")) as connection:
        return connection.execute(query, args).fetchall()


def run_files(tracking_uri: str, run_id: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found: set[str] = set()
    pending = [""]
    while pending and len(found) < 500:  # bounded walk of the run's artefact tree
        for item in client.list_artifacts(run_id, pending.pop() or None):
            (pending.append(item.path) if item.is_dir else found.add(item.path))
    return found


def test_postgres_store_trains_registers_evaluates_promotes_and_serves_the_champion(
    trained_model: TrainedModel, team: TeamStore, tmp_path: Path, restore_mlflow_uris: None
) -> None:
    from mlflow.tracking import MlflowClient

    from financemath_mlops import runs
    from financemath_mlops.evaluation.evaluate import evaluate
    from financemath_mlops.promotion.decision import promote_if_better
    from financemath_mlops.training.train import train

    settings = pipeline_settings(
        copy_features(trained_model, tmp_path),
        mlflow={
            "tracking_uri": team.tracking_uri,
            "experiment_name": EXPERIMENT,
            "model_name": "team-postgres",
        },
    )
    summary = train(
        settings.training, settings.mlflow, settings.features, settings.paths,
        settings.training_features, settings.features_input,
    )  # fmt: skip
    name = summary.model_name  # the sample source adds its suffix
    evaluate(runs.resolve(summary.model_uri), settings.metrics_output, uri=summary.model_uri)
    decision = promote_if_better(
        settings.evaluation, runs.resolve(summary.model_uri), seed=settings.training.seed
    )
    if not decision.promoted:  # the evidence rule may decline; a person promotes with the CLI
        done = subprocess.run(
            [str(VENV_BIN / "python"), "-m", "financemath_mlops.registry", "--name", name,
             "promote", summary.version, "--reason", "team-stores check: by hand"],
            env=client_env(team.tracking_uri), capture_output=True, text=True, timeout=300,
            cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr

    client = MlflowClient(tracking_uri=team.tracking_uri, registry_uri=team.tracking_uri)
    assert client.get_model_version_by_alias(name, "champion").version == summary.version
    # The registry and the run really live in PostgreSQL, the files in the bucket.
    rows = db_rows(
        team.postgres, "SELECT version, run_id FROM model_versions WHERE name = %s", name
    )
    assert rows == [(int(summary.version), summary.run_id)]
    aliases = db_rows(
        team.postgres, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", name
    )
    assert ("champion", int(summary.version)) in aliases
    assert db_rows(
        team.postgres,
        "SELECT key FROM metrics WHERE run_uuid = %s AND key = 'holdout_log_mae'",
        summary.run_id,
    )
    keys = team.s3.keys("artifacts/")  # MLflow 3 keeps models under models/m-..., not the run
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]
    assert any(summary.run_id in key for key in keys), keys[:20]

    body = serve_and_predict(f"models:/{name}@champion", team.tracking_uri, tmp_path)
    assert body["model"]["version"] == summary.version
    assert isinstance(body["prediction"], float)


def test_the_team_champion_rebuilds_bit_identically_from_postgres_and_s3(
    team: TeamStore, tmp_path: Path
) -> None:
    """`registry reproduce` through the team server (the laptop's tracking URI alone): the run's
    record, split and booster come from PostgreSQL and the S3 bucket; every embedding vector is
    computed again (the default). --allow-drift: a working tree others edit may have moved on
    since the session trained (tests/integration/test_reproduce.py tests the refusal)."""
    from mlflow.tracking import MlflowClient

    name = "team-postgres-sample"  # what the first test of this module trains and promotes
    client = MlflowClient(tracking_uri=team.tracking_uri, registry_uri=team.tracking_uri)
    version = client.get_model_version_by_alias(name, "champion").version
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "financemath_mlops.registry", "--name", name,
         "reproduce", str(version), "--allow-drift"],
        env=client_env(
            team.tracking_uri,
            FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
            FMOPS_PATHS__HF_CACHE_DIR=str(REPO_ROOT / ".cache" / "hf"),
        ),
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "= the run's" in done.stdout and "model text identical" in done.stdout
    assert "features" in done.stdout and ": identical" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("identical")
    assert [v.version for v in client.search_model_versions(f"name='{name}'")] == [version]


def test_concurrent_promotions_through_the_team_server_are_serialised_and_recorded(
    team: TeamStore, tmp_path: Path
) -> None:
    """Three people promote three versions at the same moment through the tracking server: every
    move is an entry (rows in PostgreSQL), each starts where the one before it left the alias,
    and `registry history` from a laptop (the tracking URI alone) finds the chain intact."""
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=team.tracking_uri, registry_uri=team.tracking_uri)
    name = "team-audit"
    client.create_registered_model(name)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    for _ in range(3):  # stand-in versions: moving aliases never loads a model
        run_id = client.create_run(experiment_id).info.run_id
        client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    registry = [str(VENV_BIN / "python"), "-m", "financemath_mlops.registry", "--name", name]
    people = {"alice": "1", "bob": "2", "carol": "3"}
    promotions = [
        subprocess.Popen(
            [*registry, "promote", version, "--reason", f"{who}'s evidence"],
            env=client_env(team.tracking_uri, FMOPS_ACTOR=who),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for who, version in people.items()
    ]
    for process in promotions:
        out, _ = process.communicate(timeout=300)
        assert process.returncode == 0, out

    done = subprocess.run(
        [*registry, "history", "--json"], env=client_env(team.tracking_uri), cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    history = json.loads(done.stdout)
    entries = history["entries"]
    assert history["problems"] == [] and history["unexplained"] == []
    assert len(entries) == 1 + 2 * 2  # the first promotion has no champion to keep
    state: dict[str, str] = {}
    for entry in entries:  # no move was made from a stale read
        assert entry["from_version"] == state.get(entry["alias"]), entries
        state[entry["alias"]] = entry["to_version"]
    assert {e["actor"] for e in entries} == set(people)
    assert {e["reason"] for e in entries} == {f"{who}'s evidence" for who in people}
    aliases = db_rows(
        team.postgres, "SELECT alias, version FROM registered_model_aliases WHERE name = %s", name
    )
    assert {alias: str(version) for alias, version in aliases} == state
    rows = db_rows(
        team.postgres, "SELECT count(*) FROM tags WHERE key = 'audit.model' AND value = %s", name
    )
    assert rows == [(5,)]  # the trail is in the database a pg_dump backs up
    locks = db_rows(team.postgres, "SELECT name FROM registered_models WHERE name LIKE %s",
                    "%.alias-lock")  # fmt: skip
    assert locks == []


SUMMARY_LINES = {
    "run": re.compile(r"MLflow run: ([0-9a-f]{32})"),
    "registered": re.compile(r"registered: (\S+) version (\d+) @challenger"),
}


def test_two_trainers_at_once_register_distinct_complete_versions(
    trained_model: TrainedModel, team: TeamStore, tmp_path: Path, restore_mlflow_uris: None
) -> None:
    """Two people (or a person and the nightly retrain) training at the same moment."""
    import mlflow
    from mlflow.tracking import MlflowClient

    trainers = []
    started = time.monotonic()
    for who in ("alice", "bob"):
        workdir = copy_features(trained_model, tmp_path / who)
        env = client_env(
            team.tracking_uri,
            FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
            FMOPS_PATHS__HF_CACHE_DIR=str(REPO_ROOT / ".cache" / "hf"),
        )
        command = [
            str(VENV_BIN / "python"), "-m", "financemath_mlops.training",
            "--experiment", EXPERIMENT, "--model-name", "team-concurrent", "--cv-folds", "3",
        ]  # fmt: skip
        out = (workdir / "train.log").open("w")
        trainers.append(
            (
                who,
                workdir,
                subprocess.Popen(
                    command, env=env, cwd=workdir, stdout=out, stderr=subprocess.STDOUT
                ),
            )
        )
    summaries: dict[str, tuple[str, str]] = {}
    names: set[str] = set()
    for who, workdir, process in trainers:
        try:
            process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
        text = (workdir / "train.log").read_text()
        assert process.returncode == 0, f"{who}:\n{text[-4000:]}"
        found = {key: pattern.findall(text) for key, pattern in SUMMARY_LINES.items()}
        assert len(found["run"]) == 1 and len(found["registered"]) == 1, text[-2000:]
        summaries[who] = (found["run"][0], found["registered"][0][1])
        names.add(found["registered"][0][0])
    print(f"two concurrent trainers finished in {time.monotonic() - started:.0f}s: {summaries}")

    assert len(names) == 1, names
    name = names.pop()
    client = MlflowClient(tracking_uri=team.tracking_uri, registry_uri=team.tracking_uri)
    (run_a, version_a), (run_b, version_b) = summaries.values()
    assert version_a != version_b and run_a != run_b
    # Each summary names its own version: the registry maps each version back to its own run.
    assert client.get_model_version(name, version_a).run_id == run_a
    assert client.get_model_version(name, version_b).run_id == run_b
    assert sorted(v.version for v in client.search_model_versions(f"name='{name}'")) == sorted(
        [version_a, version_b]
    )
    assert client.get_model_version_by_alias(name, "challenger").version in {version_a, version_b}
    for run_id in (run_a, run_b):
        files = run_files(team.tracking_uri, run_id)
        missing = [f for f in RUN_FILES if f not in files]
        assert not missing, f"run {run_id} lacks {missing}: {sorted(files)[:30]}"
        assert client.get_run(run_id).info.status == "FINISHED"
    mlflow.set_tracking_uri(team.tracking_uri)
    mlflow.set_registry_uri(team.tracking_uri)
    for version in (version_a, version_b):
        from mlflow.pyfunc import load_model

        model = load_model(f"models:/{name}/{version}")  # complete enough to load and predict
        import pandas as pd

        assert len(model.predict(pd.DataFrame([QUESTION]))) == 1


def test_laptop_sees_the_team_store_with_the_tracking_uri_alone(
    team: TeamStore, tmp_path: Path
) -> None:
    """A newcomer's check (docs/deployment.md): list the registry through the server only."""
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "experiments", "search"],
        env=client_env(team.tracking_uri, MLFLOW_TRACKING_URI=team.tracking_uri),
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert EXPERIMENT in done.stdout
