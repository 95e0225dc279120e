"""The containers' commands, run outside Docker: there is no Docker engine here, so this is how we
know the images would start.

Each test reads the command from the Dockerfile (JSON-form CMD, ENV, HEALTHCHECK) or from the
compose file, runs it with this venv's bin first on PATH (the image's /opt/venv/bin), in a
temporary working directory laid out like the image's /app, on a free 127.0.0.1 port instead of
the container's port, and checks what the container would be checked for. What only a real image
can show (apt packages, file ownership, the base image) is checked by CI's image job.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TrainedModel
from tests.helpers import REPO_ROOT, VENV_BIN, cli_env, free_port, load_script, running, wait_for

pytestmark = pytest.mark.integration

INFERENCE = REPO_ROOT / "docker" / "inference.Dockerfile"
PIPELINE = REPO_ROOT / "docker" / "pipeline.Dockerfile"
SERVING_APP = "financemath_mlops.serving.app"
QUESTION = {
    "question": "A bond pays a 5% annual coupon on a $1,000 face value. What is the coupon?",
    "tables": ["| item | value |\n|---|---:|\n| coupon | 5% |\n| face | $ 1,000 |"],
    "topic": "Accounting",
}


deploy_files = load_script("deploy_files")


def require_serving_app() -> None:
    if importlib.util.find_spec(SERVING_APP) is None:
        pytest.skip(f"{SERVING_APP} does not exist yet: nothing to start")


# --- running a container command on this machine -------------------------------------------------


def on_local_port(
    command: list[str], container_port: int, port: int, *, keep_host: bool = False
) -> list[str]:
    """The same command bound to 127.0.0.1:port instead of 0.0.0.0:container_port (with
    `keep_host`, to 0.0.0.0:port: what the service decides from the address it is given)."""
    out = command if keep_host else [word.replace("0.0.0.0", "127.0.0.1") for word in command]
    out = [re.sub(rf"(?<=[:=]){container_port}\b", str(port), word) for word in out]
    return [
        str(port) if i > 0 and out[i - 1] == "--port" and word == str(container_port) else word
        for i, word in enumerate(out)
    ]


def container_env(image: Any, *overlays: dict[str, Any]) -> dict[str, str]:
    """The image's ENV with /opt/venv/bin mapped to this venv, then `-e` style overlays."""
    env = cli_env()
    for key, value in image.env.items():
        if key == "PATH":
            continue  # cli_env already puts this venv's bin first
        env[key] = value
    for overlay in overlays:
        env.update({k: str(v) for k, v in overlay.items() if v is not None})
    return env


def compose_environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A compose service's environment with ${VAR:-default} resolved to the default."""
    resolved: dict[str, str | None] = {}
    for key, value in (service.get("environment") or {}).items():
        if value is None:
            resolved[key] = None  # passed through from the shell only when set: not here
        else:
            resolved[key] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
    return resolved


def image_workdir(tmp_path: Path) -> Path:
    """A directory laid out like the images' /app: the default config and writable data dirs."""
    app = tmp_path / "app"
    (app / "configs").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "configs" / "default.yaml", app / "configs" / "default.yaml")
    for name in ("data/predictions", "mlruns", "reports"):
        (app / name).mkdir(parents=True)
    return app


def status(url: str) -> int:
    return httpx.get(url, timeout=5).status_code


def run_healthcheck(test: list[str], container_port: int, port: int, env: dict[str, str]) -> None:
    command = test[1:] if test and test[0] in ("CMD", "CMD-SHELL") else test
    result = subprocess.run(
        on_local_port(command, container_port, port),
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, f"healthcheck failed: {result.stderr[-2000:]}"


# --- the inference image -------------------------------------------------------------------------


def serving_command(command: list[str]) -> None:
    """The image runs the service through uvicorn or our own entry point (which owns limits)."""
    assert command[:2] == ["uvicorn", f"{SERVING_APP}:app"] or command[:3] == [
        "python", "-m", "financemath_mlops.serving"
    ], command  # fmt: skip


def serve_as_compose_does(
    service: dict[str, Any], image: Any, env: dict[str, str], tmp_path: Path
) -> tuple[dict[str, Any], str]:
    """The image CMD on a free local port: /health, then /ready, then the compose service's
    healthcheck and one /predict; returns that prediction's body and the /metrics text."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "api.log"
    command = on_local_port(image.cmd, 8000, port)
    serving_command(command)
    with running(command, env, image_workdir(tmp_path), log) as process:
        wait_for(lambda: status(f"{base}/health") == 200, 120, "/health", process, log)
        wait_for(lambda: status(f"{base}/ready") == 200, 120, "/ready", process, log)
        run_healthcheck(service["healthcheck"]["test"], 8000, port, env)
        response = httpx.post(f"{base}/predict", json=QUESTION, timeout=30)
        assert response.status_code == 200, response.text
        metrics = httpx.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200
    return response.json(), metrics.text


def test_inference_cmd_with_the_compose_api_settings_serves_the_exported_folder(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    """`docker compose up api` (default profile): the image CMD and HEALTHCHECK with the api
    service's environment, serving the folder `make run` exports (mounted at /models/serving)
    with no tracking server at all."""
    require_serving_app()
    from financemath_mlops import runs

    api = deploy_files.compose()["services"]["api"]
    image = deploy_files.image(INFERENCE, api["build"]["target"])
    assert "command" not in api  # the image CMD is what compose runs
    compose_env = compose_environment(api)
    assert compose_env["FMOPS_SERVING__MODEL_URI"] == "/models/serving"
    runs.configure(trained_model.settings.mlflow)
    folder = tmp_path / "models" / "serving"  # what the read-only bind mount shows
    runs.export_model(f"models:/{trained_model.model_name}/{trained_model.version}", folder)
    env = container_env(
        image,
        compose_env,
        trained_model.env,
        {
            "FMOPS_SERVING__MODEL_URI": str(folder),
            # No registry needed: a tracking server that is not there changes nothing.
            "FMOPS_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        },
    )
    body, metrics = serve_as_compose_does(api, image, env, tmp_path)
    assert body["model"]["name"] == trained_model.model_name
    info = (
        f'fmops_model_info{{alias="champion",name="{trained_model.model_name}",'
        f'run_id="{trained_model.run_id}",version="{trained_model.version}"}} 1.0'
    )
    assert info in metrics


def test_inference_cmd_with_the_compose_api_registry_settings_serves_the_champion(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    """`docker compose --profile mlops up api-registry`: the same image following the registry,
    the tracking URI pointed at the test store (as FMOPS_MLFLOW__TRACKING_URI would be)."""
    require_serving_app()
    api = deploy_files.compose()["services"]["api-registry"]
    image = deploy_files.image(INFERENCE, api["build"]["target"])
    assert "command" not in api  # the image CMD is what compose runs
    env = container_env(
        image,
        compose_environment(api),
        trained_model.env,
        {
            "FMOPS_MLFLOW__TRACKING_URI": trained_model.tracking_uri,
            "FMOPS_SERVING__MODEL_NAME": trained_model.model_name,
            "FMOPS_SERVING__ALIAS": "champion",
        },
    )
    assert env["FMOPS_SERVING__RELOAD_INTERVAL_S"] == "60"  # compose's setting is in force
    body, _ = serve_as_compose_does(api, image, env, tmp_path)
    assert isinstance(body["prediction"], float)
    assert body["model"]["name"] == trained_model.model_name


@pytest.mark.parametrize("name", ["api", "api-registry"])
def test_compose_api_services_start_keyless_only_on_their_loopback_published_port(
    name: str, tmp_path: Path
) -> None:
    """The image CMD listens on 0.0.0.0, where the service refuses to start without a key: both
    compose API services pass the address their port is published on (127.0.0.1 unless
    FMOPS_BIND_ADDRESS opens it), so they start keyless there, the CMD's own host kept, and
    anonymous access is never asked for on the user's behalf."""
    require_serving_app()
    service = deploy_files.compose()["services"][name]
    image = deploy_files.image(INFERENCE, service["build"]["target"])
    compose_env = compose_environment(service)
    assert compose_env["FMOPS_SERVING__PUBLISHED_ADDRESS"] == "127.0.0.1"
    assert compose_env["FMOPS_SERVING__ALLOW_ANONYMOUS"] is None  # only when the user sets it
    assert service["environment"]["FMOPS_SERVING__PUBLISHED_ADDRESS"] == (
        "${FMOPS_BIND_ADDRESS:-127.0.0.1}"
    )  # the same variable the ports bind to
    assert compose_env["FMOPS_SERVING__API_KEY"] is None  # from the shell, only when set there
    assert all(p.startswith("${FMOPS_BIND_ADDRESS:-127.0.0.1}:") for p in service["ports"])
    port = free_port()
    command = on_local_port(image.cmd, 8000, port, keep_host=True)
    assert command[command.index("--host") + 1] == "0.0.0.0"
    env = container_env(
        image,
        compose_env,
        {
            "FMOPS_SERVING__MODEL_URI": "nowhere:/model",  # /health needs no model
            "FMOPS_MLFLOW__TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        },
    )
    log = tmp_path / f"{name}.log"
    with running(command, env, image_workdir(tmp_path), log) as process:
        wait_for(
            lambda: status(f"http://127.0.0.1:{port}/health") == 200, 120, "/health", process, log
        )
    assert "serving on 0.0.0.0, published on 127.0.0.1 without an API key (loopback" in (
        log.read_text(encoding="utf-8")
    )


def test_inference_cmd_without_a_key_or_anonymous_access_refuses_to_start(
    tmp_path: Path,
) -> None:
    """`docker run IMAGE` with neither FMOPS_SERVING__API_KEY nor
    FMOPS_SERVING__ALLOW_ANONYMOUS: exit 2 naming both, before anything listens."""
    require_serving_app()
    image = deploy_files.image(INFERENCE, "runtime")
    assert "FMOPS_SERVING__ALLOW_ANONYMOUS" not in image.env  # never baked in
    command = on_local_port(image.cmd, 8000, free_port(), keep_host=True)
    result = subprocess.run(
        command, env=container_env(image), cwd=image_workdir(tmp_path),
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Uvicorn running" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: refusing to serve on 0.0.0.0 without an API key")
    assert "FMOPS_SERVING__API_KEY" in error and "FMOPS_SERVING__ALLOW_ANONYMOUS" in error


def test_inference_with_model_target_serves_a_baked_model_folder(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    """`--target with-model`: the folder `mlflow artifacts download` writes, served by path."""
    require_serving_app()
    from financemath_mlops import runs

    model_dir = tmp_path / "models" / "serving"
    download = subprocess.run(
        [
            "mlflow", "artifacts", "download",
            "--artifact-uri", f"models:/{trained_model.model_name}/{trained_model.version}",
            "--dst-path", str(model_dir),
        ],
        env=cli_env(MLFLOW_TRACKING_URI=trained_model.tracking_uri),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert download.returncode == 0, download.stderr[-3000:]
    assert (model_dir / "MLmodel").is_file(), "the Dockerfile's MLmodel check would fail"
    try:
        runs.resolve(str(model_dir))
    except runs.TrackingError as exc:
        pytest.skip(f"runs.resolve does not accept a local model folder yet: {exc}")

    baked = deploy_files.image(INFERENCE, "with-model")
    assert baked.env["FMOPS_SERVING__MODEL_URI"] == "/opt/model"
    port = free_port()
    app = image_workdir(tmp_path)
    env = container_env(
        baked,
        {
            "FMOPS_SERVING__MODEL_URI": str(model_dir),  # /opt/model in the image
            # An empty store: a baked model needs no registry.
            "FMOPS_MLFLOW__TRACKING_URI": f"sqlite:///{app / 'mlruns' / 'mlflow.db'}",
        },
    )
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "baked.log"
    with running(on_local_port(baked.cmd, 8000, port), env, app, log) as process:
        wait_for(lambda: status(f"{base}/ready") == 200, 120, "/ready", process, log)
        response = httpx.post(f"{base}/predict", json=QUESTION, timeout=30)
        assert response.status_code == 200, response.text


# --- the compose mlflow service ------------------------------------------------------------------


def test_compose_mlflow_command_starts_a_tracking_server_that_proxies_artifacts(
    tmp_path: Path,
) -> None:
    service = deploy_files.compose()["services"]["mlflow"]
    image = deploy_files.image(
        deploy_files.compose_dockerfile(service), service["build"].get("target")
    )
    port = free_port()
    app = image_workdir(tmp_path)
    # The same flags on SQLite and a folder: PostgreSQL and an S3 API run for real in the
    # team-stores journey (tests/integration/test_team_stores.py).
    local_stores = {
        "--backend-store-uri": f"sqlite:///{app / 'mlruns' / 'mlflow.db'}",
        "--artifacts-destination": str(app / "mlruns" / "artifacts"),
    }
    command = [
        f"{flag}={local_stores[flag]}" if (flag := word.split("=")[0]) in local_stores else word
        for word in on_local_port(service["command"], 5000, port)
    ]
    assert command[:2] == ["mlflow", "server"]
    env = container_env(image, compose_environment(service))
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow.log"
    with running(command, env, app, log) as process:
        wait_for(lambda: status(f"{base}/health") == 200, 150, "mlflow /health", process, log)
        run_healthcheck(service["healthcheck"]["test"], 5000, port, env)
        # The pipeline in compose logs to "Default" (see the compose file): it must be proxied.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=base, registry_uri=base)  # no global MLflow state
        experiment = client.get_experiment_by_name("Default")
        assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment
        run = client.create_run(experiment.experiment_id)
        client.log_text(run.info.run_id, "through the server", "probe/hello.txt")
        client.set_terminated(run.info.run_id)
        stored = list((app / "mlruns" / "artifacts").rglob("hello.txt"))
        assert stored and stored[0].read_text() == "through the server"
        # Requests naming the compose host are accepted (--allowed-hosts), others are not.
        url = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        assert httpx.get(url, headers={"Host": "mlflow:5000"}, timeout=10).status_code == 200
        assert httpx.get(url, headers={"Host": "elsewhere:5000"}, timeout=10).status_code == 403


# --- the pipeline image and the Prefect services -------------------------------------------------


def test_pipeline_image_and_prefect_service_commands_parse(tmp_path: Path) -> None:
    """The pipeline CMD and the compose prefect commands accept every flag they are given."""
    pipeline = deploy_files.image(PIPELINE)
    services = deploy_files.compose()["services"]
    commands = {"pipeline CMD": pipeline.cmd}
    for name in ("prefect-server", "prefect-worker", "prefect-deploy"):
        assert deploy_files.compose_dockerfile(services[name]) == PIPELINE, name
        commands[name] = services[name]["command"]
    app = tmp_path / "app"
    app.mkdir()
    env = container_env(
        pipeline,
        {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": ""},
    )
    env.pop("PREFECT_API_URL")
    processes = {}
    for name, command in commands.items():  # in parallel: each CLI takes seconds to import
        processes[name] = subprocess.Popen(
            [*command, "--help"], env=env, cwd=app, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
    for name, process in processes.items():
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, f"{name}: {output[-3000:]}"
        help_text = re.sub(r"\s+", " ", output)
        for flag in (word.split("=")[0] for word in commands[name] if word.startswith("--")):
            assert flag in help_text, f"{name}: {flag} is not an option of {commands[name][:3]}"
    assert shutil.which("prefect", path=str(VENV_BIN))
