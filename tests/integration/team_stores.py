"""The team's stores for real, on 127.0.0.1: a throwaway PostgreSQL, an S3 API, `mlflow server`.

PostgreSQL is Debian's server (`postgresql`, installed by scripts/system_tools.sh): `initdb` and
`pg_ctl` refuse to run as root, so they run through `runuser -u postgres` in a temporary folder
owned by that user. `moto_server` stands in for S3/MinIO (MinIO itself appears only in compose).
Shared by the team-stores journey (test_team_stores*.py; FMOPS_TEST_TEAM_STORES=1).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import TrainedModel
from tests.helpers import REPO_ROOT, VENV_BIN, cli_env, free_port, running, wait_for

BUCKET = "financemath-mlflow"  # the compose default (FMOPS_MLFLOW_BUCKET)
COMPOSE_FILE = REPO_ROOT / "docker" / "docker-compose.yml"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PG_USER = "postgres"
# The team-stores journey's marks: minutes of PostgreSQL and MLflow migrations, so it runs only
# when asked (`.ci/run` and `make test-team-stores` set FMOPS_TEST_TEAM_STORES=1).
JOURNEY = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("FMOPS_TEST_TEAM_STORES") != "1",
        reason="the team-stores journey: FMOPS_TEST_TEAM_STORES=1 (.ci/run sets it)",
    ),
]
MLFLOW_USER = "mlflow"  # the compose default (POSTGRES_USER)


def postgres_bin(name: str) -> str | None:
    """Debian keeps the server binaries in /usr/lib/postgresql/N/bin, off PATH."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def skip_unless_postgres() -> dict[str, str]:
    tools = {name: postgres_bin(name) for name in ("initdb", "pg_ctl")}
    missing = [name for name, path in tools.items() if path is None]
    if missing:
        pytest.skip(f"PostgreSQL server binaries missing ({missing}): apt-get install postgresql")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: initdb refuses root")
    try:
        import pwd

        pwd.getpwnam(PG_USER)
    except KeyError:
        pytest.skip(f"no '{PG_USER}' system user (Debian's postgresql package creates it)")
    if not (VENV_BIN / "moto_server").exists():
        pytest.skip("moto_server not installed (the dev extra's moto[server])")
    return {name: str(path) for name, path in tools.items()}


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else command


@dataclass
class Postgres:
    port: int
    folder: Path

    def uri(self, database: str) -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.uri("postgres"), autocommit=True) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (MLFLOW_USER,)
            ).fetchone()
            if not exists:
                connection.execute(f'CREATE ROLE "{MLFLOW_USER}" LOGIN')
            connection.execute(f'CREATE DATABASE "{name}" OWNER "{MLFLOW_USER}"')
        return self.uri(name)


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    """initdb + pg_ctl start in a temp folder (trust auth on 127.0.0.1, no fsync); removed after."""
    tools = skip_unless_postgres()
    folder = Path(tempfile.mkdtemp(prefix="fmops-pg-"))
    os.chmod(folder, 0o755)
    if os.geteuid() == 0:
        shutil.chown(folder, PG_USER, PG_USER)
    data, log = folder / "data", folder / "postgres.log"
    port = free_port()
    run = lambda cmd: subprocess.run(  # noqa: E731
        _as_postgres(cmd), check=True, capture_output=True, text=True, timeout=120, cwd=folder
    )
    try:
        run(
            [
                tools["initdb"],
                "-D",
                str(data),
                "-U",
                PG_USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        run(
            [
                tools["pg_ctl"],
                "-D",
                str(data),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        try:
            yield Postgres(port, folder)
        finally:
            subprocess.run(
                _as_postgres([tools["pg_ctl"], "-D", str(data), "-m", "fast", "-w", "stop"]),
                capture_output=True, timeout=60, cwd=folder,
            )  # fmt: skip
    except subprocess.CalledProcessError as error:
        raise AssertionError(f"{error.cmd} failed:\n{error.stdout}\n{error.stderr}") from error
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class S3:
    endpoint: str
    client: Any  # boto3 S3 client

    def keys(self, prefix: str) -> list[str]:
        return self.keys_in(BUCKET, prefix)

    def keys_in(self, bucket: str, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@contextlib.contextmanager
def moto_s3(workdir: Path) -> Iterator[S3]:
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = workdir / "moto.log"
    command = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with running(command, cli_env(**S3_ENV), workdir, log) as process:
        client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id="testing",
            aws_secret_access_key="testing", region_name="us-east-1",
        )  # fmt: skip
        # botocore's connection errors are no OSError: retry any error while moto starts.
        wait_for(lambda: client.list_buckets() is not None, 60, "moto_server", process, log,
                 retry_on=(Exception,))  # fmt: skip
        client.create_bucket(Bucket=BUCKET)
        yield S3(endpoint, client)


def client_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """A team member's laptop: the tracking URI and nothing else (no S3 or database secrets)."""
    env = cli_env(FMOPS_MLFLOW__TRACKING_URI=tracking_uri, MLFLOW_DISABLE_TELEMETRY="true", **extra)
    for key in (*S3_ENV, "AWS_PROFILE", "AWS_SESSION_TOKEN", "MLFLOW_S3_ENDPOINT_URL"):
        env.pop(key, None)
    return env


def compose_mlflow(
    mlflow_bin: Path, postgres: Postgres, database: str, s3: S3, port: int, workdir: Path
) -> tuple[list[str], dict[str, str]]:
    """Compose's `mlflow` command and environment (docker/docker-compose.yml, defaults taken),
    pointed at this PostgreSQL and S3 API instead of the `postgres` and `minio` services."""
    service = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]["mlflow"]
    defaults = lambda word: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(word))  # noqa: E731
    local = {
        "0.0.0.0": "127.0.0.1",
        "--port=5000": f"--port={port}",
        "@postgres:5432/mlflow": f"@127.0.0.1:{postgres.port}/{database}",
        "/tmp/mlflow-metrics": str(workdir / "mlflow-metrics"),
        "http://minio:9000": s3.endpoint,
    }
    command = []
    for word in service["command"]:
        word = defaults(word)
        for old, new in local.items():
            word = word.replace(old, new)
        command.append(word)
    assert command[:2] == ["mlflow", "server"], command
    command[0] = str(mlflow_bin)
    env = cli_env(MLFLOW_DISABLE_TELEMETRY="true")
    for key, value in (service.get("environment") or {}).items():
        if value is not None:
            env[key] = local.get(defaults(value), defaults(value))
    # The pass-through secrets (docker/.env): moto's keys; PostgreSQL here trusts 127.0.0.1.
    env.update(S3_ENV, PGPASSWORD="unused-with-trust-auth")
    return command, env


@contextlib.contextmanager
def mlflow_server(
    mlflow_bin: Path, postgres: Postgres, database: str, s3: S3, workdir: Path, name: str = "mlflow"
) -> Iterator[str]:
    """The compose `mlflow` service's command, run on 127.0.0.1 by `mlflow_bin`'s MLflow."""
    port = free_port()
    log = workdir / f"{name}.log"
    command, env = compose_mlflow(mlflow_bin, postgres, database, s3, port, workdir)
    # MLflow 3's job runner (six huey consumers, each importing MLflow) halves start-up time on
    # 2 busy cores and nothing here submits jobs (85 s -> 37 s measured under load).
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with running(command, env, workdir, log) as process:
        uri = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(f"{uri}/health", timeout=5).status_code == 200,
            240, f"mlflow server ({mlflow_bin})", process, log,
        )  # fmt: skip
        yield uri


def create_experiment(tracking_uri: str, name: str) -> str:
    """Created on the server's side (as `mlflow experiments create` does): proxied location."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = client.get_experiment_by_name(name)
    experiment_id = found.experiment_id if found else client.create_experiment(name)
    location = client.get_experiment(experiment_id).artifact_location
    assert location.startswith("mlflow-artifacts:"), location
    return experiment_id


def tool_venv(name: str) -> Path:
    """The bin folder of a tool that cannot share the project's lock (requirements/<name>-tool.in
    says why), installed once from its hashed lock requirements/<name>-tool.txt into the per-user
    tool cache by scripts/tool_venv.sh, the installer checkov's venv shares."""
    done = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "tool_venv.sh"), name],
        capture_output=True, text=True, timeout=1200,
        env={**os.environ, "PYTHON": os.path.realpath(sys.executable)},
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"scripts/tool_venv.sh {name} failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip())


# What the team-store tests ask the service.
QUESTION = {
    "question": "A bond pays a 5% annual coupon on a $1,000 face value. What is the coupon?",
    "tables": ["| item | value |\n|---|---:|\n| coupon | 5% |\n| face | $ 1,000 |"],
    "topic": "Accounting",
}


@dataclass
class TeamStore:
    tracking_uri: str
    s3: S3
    postgres: Postgres
    backend_uri: str


@contextlib.contextmanager
def team_store(workdir: Path, experiment: str) -> Iterator[TeamStore]:
    """The team's stores, running: a throwaway PostgreSQL with an `mlflow` database, moto's S3
    API and compose's `mlflow server` (this venv's MLflow) with `experiment` created."""
    with throwaway_postgres() as postgres:
        backend = postgres.create_database("mlflow")
        with (
            moto_s3(workdir) as s3,
            mlflow_server(VENV_BIN / "mlflow", postgres, "mlflow", s3, workdir) as uri,
        ):
            create_experiment(uri, experiment)
            yield TeamStore(uri, s3, postgres, backend)


def copy_features(trained_model: TrainedModel, workdir: Path) -> Path:
    """The session's ingested rows and features, so trainers here skip ingestion and features."""
    shutil.copytree(trained_model.workdir / "data", workdir / "data")
    return workdir


def serve_and_predict(model_uri: str, tracking_uri: str, workdir: Path) -> dict:
    """The service on the laptop side: the tracking URI only, no S3 or database credentials."""
    port = free_port()
    env = client_env(tracking_uri, FMOPS_SERVING__MODEL_URI=model_uri)
    base = f"http://127.0.0.1:{port}"
    log = workdir / "api.log"
    command = [
        str(VENV_BIN / "python"), "-m", "financemath_mlops.serving",
        "--model-uri", model_uri, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    (workdir / "api").mkdir(exist_ok=True)
    with running(command, env, workdir / "api", log) as process:
        wait_for(
            lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 200,
            240, f"the service on {model_uri}", process, log,
        )  # fmt: skip
        response = httpx.post(f"{base}/predict", json=QUESTION, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()
