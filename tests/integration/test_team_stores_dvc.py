"""Data versioned with DVC, for real: `dvc push` from one clone, `dvc pull` in another, same bytes;
then the pipeline trains on the pulled file and the MLflow run names that DVC version.

The remote is the repository's own `.dvc/config` (remote `team`, s3://financemath-data/dvc) with
the endpoint pointed at moto's S3 API through `.dvc/config.local`, as a laptop points it at the
team's MinIO. DVC runs from its own venv (requirements/dvc-tool.txt: it cannot share the
project's constraints). Part of the team-stores journey (FMOPS_TEST_TEAM_STORES=1).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from tests.helpers import REPO_ROOT, VENV_BIN, cli_env, run_ok, write_json
from tests.integration.team_stores import JOURNEY, S3_ENV, moto_s3, tool_venv

pytestmark = JOURNEY
DATA_BUCKET = "financemath-data"  # the bucket of the committed .dvc/config


def sh(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    return run_ok(command, env=env, cwd=cwd, timeout=timeout).stdout


def git(cwd: Path, env: dict[str, str], *args: str) -> str:
    return sh(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd, env)


def test_dvc_push_then_pull_in_another_clone_restores_the_bytes_and_the_run_names_them(
    tmp_path: Path,
) -> None:
    from financemath_mlops.synthetic.sample import generate_sample

    dvc = str(tool_venv("dvc") / "dvc")
    with moto_s3(tmp_path) as s3:
        s3.client.create_bucket(Bucket=DATA_BUCKET)
        env = cli_env(**S3_ENV, DVC_NO_ANALYTICS="1", GIT_TERMINAL_PROMPT="0")
        origin, alice, bob = tmp_path / "origin.git", tmp_path / "alice", tmp_path / "bob"
        sh(["git", "init", "-q", "--bare", str(origin)], tmp_path, env)

        # Alice: a repository with the project's DVC config, a synthetic raw file, dvc add + push.
        sh(["git", "clone", "-q", str(origin), str(alice)], tmp_path, env)
        sh([dvc, "init", "-q"], alice, env)
        shutil.copy(REPO_ROOT / ".dvc" / "config", alice / ".dvc" / "config")
        sh([dvc, "remote", "modify", "--local", "team", "endpointurl", s3.endpoint], alice, env)
        raw = write_json(
            alice / "data" / "raw" / "validation.json", generate_sample(rows=120, seed=5)
        )
        sh([dvc, "add", "data/raw"], alice, env)
        git(
            alice,
            env,
            "add",
            ".dvc/config",
            ".dvc/.gitignore",
            ".dvcignore",
            "data/raw.dvc",
            "data/.gitignore",
        )
        committed = git(alice, env, "commit", "-q", "-m", "snapshot data/raw")
        assert "config.local" not in git(alice, env, "show", "--stat", "HEAD"), committed
        git(alice, env, "push", "-q", "origin", "HEAD:main")
        sh([dvc, "push"], alice, env)
        assert s3.keys_in(DATA_BUCKET, "dvc/"), "dvc push stored nothing in the bucket"

        # Bob: a fresh clone has the pointer only; dvc pull brings the same bytes.
        sh(["git", "clone", "-q", "-b", "main", str(origin), str(bob)], tmp_path, env)
        assert not (bob / "data" / "raw" / "validation.json").exists()
        sh([dvc, "remote", "modify", "--local", "team", "endpointurl", s3.endpoint], bob, env)
        sh([dvc, "pull"], bob, env)
        pulled = bob / "data" / "raw" / "validation.json"
        assert pulled.read_bytes() == raw.read_bytes()

    # The pipeline on Bob's pulled file (no DVC needed to run it): the run names the snapshot.
    pointer = yaml.safe_load((bob / "data" / "raw.dvc").read_text())
    expected = f"dvc:{pointer['outs'][0]['md5']}:validation.json"
    stage_env = cli_env(
        FMOPS_CONFIG=str(REPO_ROOT / "configs" / "default.yaml"),
        FMOPS_MLFLOW__TRACKING_URI=f"sqlite:///{bob / 'mlruns' / 'mlflow.db'}",
        FMOPS_MLFLOW__ARTIFACT_ROOT=str(bob / "mlruns" / "artifacts"),
        FMOPS_PATHS__CACHE_DIR=str(REPO_ROOT / ".cache"),
        FMOPS_PATHS__HF_CACHE_DIR=str(REPO_ROOT / ".cache" / "hf"),
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    python = str(VENV_BIN / "python")
    sh(
        [
            python,
            "-m",
            "financemath_mlops.ingestion",
            "--source",
            "local",
            "--path",
            "data/raw/validation.json",
        ],
        bob,
        stage_env,
    )
    manifest = json.loads((bob / "data" / "interim" / "financemath.manifest.json").read_text())
    assert manifest["source"]["revision"] == expected
    sh([python, "-m", "financemath_mlops.features"], bob, stage_env, timeout=600)
    out = sh(
        [python, "-m", "financemath_mlops.training", "--cv-folds", "2"], bob, stage_env, timeout=600
    )

    from mlflow.tracking import MlflowClient

    run_id = next(
        line.split("MLflow run: ")[1].split()[0]
        for line in out.splitlines()
        if "MLflow run: " in line
    )
    run = MlflowClient(
        tracking_uri=stage_env["FMOPS_MLFLOW__TRACKING_URI"],
        registry_uri=stage_env["FMOPS_MLFLOW__TRACKING_URI"],
    ).get_run(run_id)
    assert run.data.params["data.version"] == expected
    assert run.data.params["data.revision"] == expected
    assert run.data.tags["data.version"] == expected
    assert run.inputs.dataset_inputs, "log_input is still there beside the data version"
