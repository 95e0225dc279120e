"""A team store made by MLflow's previous minor version, upgraded with `mlflow db upgrade`, still
serves its champion.

The previous version runs from its own venv (per-user tool cache, pinned by
requirements/mlflow-previous-tool.txt) with compose's `mlflow` command on a throwaway PostgreSQL
and moto's S3 API; the project trains, registers and promotes through it. Then the project's
MLflow upgrades the schema and serves `models:/NAME@champion` from the same database and bucket.
Part of the team-stores journey (FMOPS_TEST_TEAM_STORES=1).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import TrainedModel, pipeline_settings
from tests.helpers import VENV_BIN
from tests.integration.team_stores import (
    JOURNEY,
    MLFLOW_USER,
    Postgres,
    client_env,
    copy_features,
    create_experiment,
    mlflow_server,
    moto_s3,
    serve_and_predict,
    throwaway_postgres,
    tool_venv,
)

pytestmark = JOURNEY
PREVIOUS = "3.16.1"  # the minor before the lock's mlflow==3.17.2


def alembic_version(postgres: Postgres, database: str) -> str:
    import psycopg

    with psycopg.connect(postgres.uri(database)) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_store_of_the_previous_mlflow_minor_upgrades_and_still_serves_its_champion(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    import mlflow
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    from financemath_mlops.training.train import train

    previous = tool_venv("mlflow-previous")  # requirements/mlflow-previous-tool.in: PREVIOUS
    done = subprocess.run(
        [str(previous / "mlflow"), "--version"], capture_output=True, text=True, timeout=120
    )
    assert PREVIOUS in done.stdout, done.stdout + done.stderr
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with throwaway_postgres() as postgres, moto_s3(tmp_path) as s3:
        postgres.create_database("legacy")
        # As the server's own role: run as a superuser, the upgrade's new tables would belong to
        # it and the server would get "permission denied" on them.
        backend = f"postgresql://{MLFLOW_USER}@127.0.0.1:{postgres.port}/legacy"
        with mlflow_server(
            previous / "mlflow", postgres, "legacy", s3, tmp_path, "mlflow-previous"
        ) as uri:
            create_experiment(uri, "financemath-legacy")
            settings = pipeline_settings(
                copy_features(trained_model, tmp_path / "train"),
                mlflow={
                    "tracking_uri": uri,
                    "experiment_name": "financemath-legacy",
                    "model_name": "legacy",
                },
            )
            try:
                summary = train(
                    settings.training, settings.mlflow, settings.features, settings.paths,
                    settings.training_features, settings.features_input,
                )  # fmt: skip
            finally:
                mlflow.set_tracking_uri(tracking)
                mlflow.set_registry_uri(registry)
            promoted = subprocess.run(
                [str(VENV_BIN / "python"), "-m", "financemath_mlops.registry", "--name",
                 summary.model_name, "promote", summary.version, "--reason", "upgrade check"],
                env=client_env(uri), capture_output=True, text=True, timeout=300, cwd=tmp_path,
            )  # fmt: skip
            assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        created_by_previous = alembic_version(postgres, "legacy")

        upgrade = subprocess.run(
            [str(VENV_BIN / "mlflow"), "db", "upgrade", backend],
            env=client_env("unused"), capture_output=True, text=True, timeout=600, cwd=tmp_path,
        )  # fmt: skip
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        head = ScriptDirectory.from_config(_get_alembic_config(backend)).get_current_head()
        upgraded = alembic_version(postgres, "legacy")
        assert upgraded == head
        print(f"schema made by MLflow {PREVIOUS}: {created_by_previous}; after upgrade: {upgraded}")

        with mlflow_server(
            VENV_BIN / "mlflow", postgres, "legacy", s3, tmp_path, "mlflow-current"
        ) as uri:
            body = serve_and_predict(f"models:/{summary.model_name}@champion", uri, tmp_path)
    assert body["model"]["version"] == summary.version
    assert isinstance(body["prediction"], float)
