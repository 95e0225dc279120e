"""MLflow on a remote tracking server with an S3-compatible artefact store, for real.

`moto_server` (an S3 API on 127.0.0.1) stands in for S3/MinIO; `mlflow server` (SQLite backend)
proxies artefacts to it (`--serve-artifacts --artifacts-destination s3://...`). Two ways a client
can store artefacts, both trained with the real training stage, registered, and served:

- direct: the experiment's artefact root is `s3://...` (`mlflow.artifact_root`); every client
  (trainer and service) needs `MLFLOW_S3_ENDPOINT_URL` and AWS credentials, and boto3.
- proxied: the experiment lives at `mlflow-artifacts:/...` on the server (what compose uses);
  clients only talk HTTP to the server: the service here runs without any S3 setting.

Both land their files in the bucket, which the test lists.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TrainedModel, pipeline_settings
from tests.helpers import VENV_BIN, cli_env, free_port, running, seeded_store, wait_for

# Training sets MLflow's process-wide URIs: every test here gets them back afterwards.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_mlflow_uris")]

BUCKET = "fmops-artifacts"
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
QUESTION = {
    "question": "A bond pays a 5% annual coupon on a $1,000 face value. What is the coupon?",
    "tables": ["| item | value |\n|---|---:|\n| coupon | 5% |\n| face | $ 1,000 |"],
    "topic": "Accounting",
}


@dataclass
class RemoteStore:
    tracking_uri: str
    s3_endpoint: str
    s3: Any  # a boto3 S3 client on the moto server

    def keys(self, prefix: str) -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def remote_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteStore]:
    if not (VENV_BIN / "moto_server").exists():
        pytest.skip("moto_server not installed (the dev extra's moto[server])")
    import boto3

    workdir = tmp_path_factory.mktemp("remote-store")
    s3_port, mlflow_port = free_port(), free_port()
    s3_endpoint = f"http://127.0.0.1:{s3_port}"
    env = cli_env(
        **S3_ENV,
        MLFLOW_S3_ENDPOINT_URL=s3_endpoint,
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # as in docker-compose.yml
    )
    moto_log, mlflow_log = workdir / "moto.log", workdir / "mlflow.log"
    moto = [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)]
    server = [
        str(VENV_BIN / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
        "--backend-store-uri", seeded_store(workdir / "mlflow.db"),  # tables copied, not migrated
        "--serve-artifacts", "--artifacts-destination", f"s3://{BUCKET}/proxied",
    ]  # fmt: skip
    with (
        running(moto, env, workdir, moto_log) as moto_process,
        running(server, env, workdir, mlflow_log) as mlflow_process,  # starts meanwhile
    ):
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, **_boto_credentials())
        # botocore's connection errors are no OSError: retry any error while moto starts.
        wait_for(lambda: s3.list_buckets() is not None, 30, "moto_server", moto_process, moto_log,
                 retry_on=(Exception,))  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        wait_for(
            lambda: httpx.get(f"{tracking_uri}/health", timeout=5).status_code == 200,
            120, "mlflow server", mlflow_process, mlflow_log,
        )  # fmt: skip
        yield RemoteStore(tracking_uri, s3_endpoint, s3)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def train_on_remote(
    trained_model: TrainedModel, workdir: Path, store: RemoteStore, **mlflow_section: str
) -> Any:
    """The training stage on the fixture's features (copied), tracked on the remote server."""
    from financemath_mlops.training.train import train

    shutil.copytree(trained_model.workdir / "data", workdir / "data")
    settings = pipeline_settings(
        workdir, mlflow={"tracking_uri": store.tracking_uri, **mlflow_section}
    )
    assert settings.training_features.is_file()
    return train(
        settings.training, settings.mlflow, settings.features, settings.paths,
        settings.training_features, settings.features_input,
    )  # fmt: skip


def test_direct_s3_artifact_root_trains_registers_and_loads(
    trained_model: TrainedModel,
    remote_store: RemoteStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pandas as pd

    from financemath_mlops import runs

    for key, value in {**S3_ENV, "MLFLOW_S3_ENDPOINT_URL": remote_store.s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    summary = train_on_remote(
        trained_model, tmp_path, remote_store,
        artifact_root=f"s3://{BUCKET}/direct", experiment_name="financemath-direct",
        model_name="remote-direct",
    )  # fmt: skip
    assert summary.tracking_uri == remote_store.tracking_uri

    ref = runs.resolve(f"models:/{summary.model_name}@challenger")
    assert ref.version == summary.version and ref.run_id == summary.run_id
    model = runs.load_pyfunc(ref.uri)
    prediction = model.predict(pd.DataFrame([{**QUESTION}]))
    assert len(prediction) == 1

    keys = remote_store.keys("direct/")
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]
    assert any(summary.run_id in key for key in keys)
    assert not remote_store.keys("proxied/") or all(
        summary.run_id not in key for key in remote_store.keys("proxied/")
    )


def test_proxied_artifacts_train_register_and_serve_without_s3_credentials(
    trained_model: TrainedModel,
    remote_store: RemoteStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlflow.tracking import MlflowClient

    for key in (*S3_ENV, "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)  # the server alone talks to S3
    experiment = "financemath-proxied"
    client = MlflowClient(tracking_uri=remote_store.tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        # Created on the server's side, as an operator would (`mlflow experiments create`): its
        # artefact location is the server's proxied root, not a path of this client.
        client.create_experiment(experiment)
    assert client.get_experiment_by_name(experiment).artifact_location.startswith(
        "mlflow-artifacts:"
    )
    summary = train_on_remote(
        trained_model, tmp_path / "train", remote_store,
        experiment_name=experiment, model_name="remote-proxied",
    )  # fmt: skip
    keys = remote_store.keys("proxied/")
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]
    assert any(summary.run_id in key for key in keys)

    if not _serving_app_exists():
        pytest.skip("financemath_mlops.serving.app does not exist yet: trained and stored only")
    port = free_port()
    env = cli_env(
        FMOPS_MLFLOW__TRACKING_URI=remote_store.tracking_uri,
        FMOPS_SERVING__MODEL_NAME=summary.model_name,
        FMOPS_SERVING__ALIAS="challenger",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    for key in (*S3_ENV, "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(key, None)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    command = [
        str(VENV_BIN / "uvicorn"), "financemath_mlops.serving.app:app",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    (tmp_path / "api").mkdir()
    with running(command, env, tmp_path / "api", log) as process:
        wait_for(
            lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 200,
            120, "the service on the remote model", process, log,
        )  # fmt: skip
        response = httpx.post(f"{base}/predict", json=QUESTION, timeout=30)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["name"] == summary.model_name
        assert body["model"]["version"] == summary.version
        assert isinstance(body["prediction"], float)


def _serving_app_exists() -> bool:
    import importlib.util

    return importlib.util.find_spec("financemath_mlops.serving.app") is not None
