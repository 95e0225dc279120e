"""The deployment files keep their promises: small images, non-root, no secrets, health checks,
named volumes, the monitoring files they mount, and a serving extra without the heavy stack.

The linters (hadolint, docker-compose config, promtool, check-jsonschema) run in `make lint`;
these tests pin what the linters cannot know about this project.
"""

from __future__ import annotations

import fnmatch
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import REPO_ROOT, load_script

deploy_files = load_script("deploy_files")

INFERENCE = REPO_ROOT / "docker" / "inference.Dockerfile"
PIPELINE = REPO_ROOT / "docker" / "pipeline.Dockerfile"
HEAVY = ("torch", "sentence-transformers", "prefect", "evidently")
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
OUR_IMAGES = ("financemath-mlops/inference", "financemath-mlops/pipeline")
# Variables our services may take besides FMOPS_*: those of the tools they run.
THIRD_PARTY_ENV = ("MLFLOW_", "AWS_", "PREFECT_", "HF_TOKEN", "PGPASSWORD")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return deploy_files.compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


# --- the serving extra ---------------------------------------------------------------------------


def resolved_distributions(name: str, extras: set[str]) -> tuple[set[str], set[str]]:
    """Every distribution ``name[extras]`` pulls in, walked over the installed metadata.

    Returns (found, missing): a dependency that is not installed cannot be walked further, so the
    caller must see that list empty for the answer to be complete.
    """
    wanted: dict[str, set[str]] = {}
    missing: set[str] = set()
    queue = [(name, set(extras))]
    while queue:
        dist_name, dist_extras = queue.pop()
        key = canonicalize_name(dist_name)
        if key in wanted and dist_extras <= wanted[key]:
            continue
        wanted.setdefault(key, set()).update(dist_extras)
        try:
            requires = metadata.distribution(dist_name).requires or []
        except metadata.PackageNotFoundError:
            missing.add(key)
            continue
        environments = [{"extra": extra} for extra in wanted[key]] or [{"extra": ""}]
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate(env) for env in environments):
                queue.append((requirement.name, set(requirement.extras)))
    return set(wanted) - missing, missing


def test_serving_extra_resolves_without_torch_sentence_transformers_prefect_or_evidently() -> None:
    found, missing = resolved_distributions("financemath-mlops", {"serving"})
    assert not missing, f"not installed, so not walked: {sorted(missing)}"
    assert {"mlflow-skinny", "onnxruntime", "fastparquet", "fastapi", "uvicorn"} <= found
    assert not found & {canonicalize_name(h) for h in HEAVY}
    # issue 18: the tree model runs on numpy, the log writes with fastparquet, MLflow is the client
    assert not found & {"lightgbm", "scipy", "pyarrow", "mlflow", "scikit-learn", "matplotlib"}
    assert not {d for d in found if d.startswith("nvidia-")}


def test_the_walk_does_see_the_heavy_stack_in_the_pipeline_extra() -> None:
    found, _ = resolved_distributions("financemath-mlops", {"pipeline"})
    assert {canonicalize_name(h) for h in HEAVY} <= found


# --- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", deploy_files.dockerfiles(), ids=lambda p: p.name)
def test_final_image_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    user = deploy_files.image(dockerfile).user
    assert user is not None and re.fullmatch(r"[1-9]\d*(:\d+)?", user), user
    assert not user.startswith("0")


@pytest.mark.parametrize("dockerfile", deploy_files.dockerfiles(), ids=lambda p: p.name)
def test_base_image_is_python_3_11_slim_on_a_named_debian_release(dockerfile: Path) -> None:
    _, stages = deploy_files.parse_dockerfile(dockerfile)
    names = {stage.name for stage in stages}
    for stage in stages:
        if stage.base not in names and stage.base != "scratch":  # scratch: a context stand-in
            assert re.fullmatch(r"python:3\.11-slim-[a-z]+", stage.base), stage.base


@pytest.mark.parametrize("dockerfile", deploy_files.dockerfiles(), ids=lambda p: p.name)
def test_no_secret_is_baked_into_an_image(dockerfile: Path) -> None:
    _, stages = deploy_files.parse_dockerfile(dockerfile)
    for stage in stages:
        for keyword in ("ENV", "ARG"):
            for args in stage.of(keyword):
                for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or [args.split()[0]]:
                    assert not any(word in name.upper() for word in SECRET_WORDS), (
                        f"{dockerfile.name}: {keyword} {name} looks like a secret"
                    )


def test_inference_image_is_the_serving_extra_in_a_venv_without_compiler_or_torch() -> None:
    _, stages = deploy_files.parse_dockerfile(INFERENCE)
    builder = next(stage for stage in stages if stage.name == "builder")
    runs = " ".join(builder.of("RUN"))
    # The lock's coverage of the extra: tests/unit/test_requirements_lock.py.
    assert "-r requirements/serving.txt" in runs
    assert "--require-hashes" in runs
    assert "torch" not in " ".join(args for stage in stages for args in stage.of("RUN")).replace(
        "('torch'", ""
    )
    final = deploy_files.image(INFERENCE, "runtime")
    copies = final.instructions("COPY")
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)
    assert not [c for c in copies if "--from=builder" in c and "/opt/venv" not in c]
    final_runs = " ".join(final.instructions("RUN"))
    for compiler in ("gcc", "g++", "build-essential", "clang", "cmake"):
        assert compiler not in final_runs
    assert final.cmd == [
        "python", "-m", "financemath_mlops.serving", "--host", "0.0.0.0", "--port", "8000",
    ]  # fmt: skip
    assert final.healthcheck is not None and "/health" in " ".join(final.healthcheck)
    assert final.healthcheck[0] == "python"  # no curl in slim images


def test_inference_image_can_bake_a_model_folder_served_by_path() -> None:
    baked = deploy_files.image(INFERENCE, "with-model")
    assert baked.env["FMOPS_SERVING__MODEL_URI"] == "/opt/model"
    assert any(c.startswith("${MODEL_DIR} /opt/model") for c in baked.instructions("COPY"))
    assert baked.cmd == deploy_files.image(INFERENCE, "runtime").cmd
    assert "FMOPS_SERVING__MODEL_URI" not in deploy_files.image(INFERENCE, "runtime").env


def test_pipeline_image_takes_torch_pinned_like_the_lock_from_the_cpu_index() -> None:
    text = PIPELINE.read_text(encoding="utf-8")
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    pins = set(re.findall(r"torch==([0-9.]+)", text))
    makefile = re.search(r"TORCH_SPEC \?= torch==([0-9.]+)", (REPO_ROOT / "Makefile").read_text())
    assert makefile
    assert pins == {makefile[1]}  # `make lock` resolves torch's dependencies for TORCH_SPEC
    runs = " ".join(deploy_files.image(PIPELINE).instructions("RUN"))
    assert "-r requirements/pipeline.txt" in " ".join(
        args for stage in deploy_files.parse_dockerfile(PIPELINE)[1] for args in stage.of("RUN")
    )
    assert "gcc" not in runs


@pytest.mark.parametrize("dockerfile", deploy_files.dockerfiles(), ids=lambda p: p.name)
def test_no_syntax_directive_that_fetches_a_frontend_from_a_registry(dockerfile: Path) -> None:
    """`# syntax=` makes BuildKit pull a frontend image: air-gapped builds fail for nothing."""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break  # parser directives only count before the first instruction
        assert not re.match(r"#\s*syntax\s*=", line, re.IGNORECASE), f"{dockerfile.name}: {line}"


def stage_needs(stage: deploy_files.Stage) -> set[str]:
    """The stages or images one stage uses: its base, COPY --from and RUN --mount from."""
    needs = {stage.base}
    for args in stage.of("COPY") + stage.of("RUN"):
        needs |= set(re.findall(r"--from=([^\s,]+)", args))
        needs |= set(re.findall(r"--mount=\S*\bfrom=([^\s,]+)", args))
    return needs


def built_targets(dockerfile: Path) -> set[str]:
    """The targets the project builds from a Dockerfile: the last stage and every compose one."""
    _, stages = deploy_files.parse_dockerfile(dockerfile)
    targets = {stages[-1].name}
    for service in deploy_files.compose()["services"].values():
        if deploy_files.compose_dockerfile(service) == dockerfile:
            targets.add(service["build"].get("target", stages[-1].name))
    return targets | {"runtime"} & {stage.name for stage in stages}


@pytest.mark.parametrize("dockerfile", deploy_files.dockerfiles(), ids=lambda p: p.name)
def test_every_stage_before_a_target_is_one_it_needs(dockerfile: Path) -> None:
    """Builders without stage pruning (podman < 4.4) build every stage before the target: a stage
    the target does not need must come after it, or its COPY of an absent model folder breaks
    the build of a target that never uses it."""
    _, stages = deploy_files.parse_dockerfile(dockerfile)
    by_name = {stage.name: stage for stage in stages if stage.name}
    for target in built_targets(dockerfile):
        needed, pending = set(), [target]
        while pending:
            name = pending.pop()
            if name in by_name and name not in needed:
                needed.add(name)
                pending += stage_needs(by_name[name])
        position = [stage.name for stage in stages].index(target)
        unneeded = [stage.name for stage in stages[:position] if stage.name not in needed]
        assert not unneeded, f"{dockerfile.name}: building {target} also builds {unneeded}"


def test_compose_names_the_target_of_every_multi_target_build() -> None:
    """The inference Dockerfile ends with `with-model`: a build without --target bakes a model."""
    for name, service in deploy_files.compose()["services"].items():
        if deploy_files.compose_dockerfile(service) == INFERENCE:
            assert service["build"].get("target") == "runtime", name
    assert deploy_files.parse_dockerfile(INFERENCE)[1][-1].name == "with-model"


def test_prefect_ui_build_folder_is_writable_by_the_pipeline_user() -> None:
    """`prefect server start` writes its UI build at start; in site-packages (root's) it cannot,
    and the UI answers 404. The folder must lie under one the image gives to its user."""
    final = deploy_files.image(PIPELINE)
    static = final.env.get("PREFECT_SERVER_UI_STATIC_DIRECTORY")
    assert static and static.startswith("/"), "PREFECT_SERVER_UI_STATIC_DIRECTORY is not set"
    uid = final.user.split(":")[0] if final.user else ""
    owned = [
        folder
        for run in final.instructions("RUN")
        for match in re.finditer(rf"chown -R {uid}(?::\d+)? ([^&;|]+)", run)
        for folder in match[1].split()
    ]
    assert any(static == f or static.startswith(f.rstrip("/") + "/") for f in owned), (
        f"{static} is not under a folder chowned to {uid}: {owned}"
    )
    for name, service in deploy_files.compose()["services"].items():
        if deploy_files.compose_dockerfile(service) == PIPELINE:
            environment = service.get("environment") or {}
            assert "PREFECT_SERVER_UI_STATIC_DIRECTORY" not in environment, name


def test_pipeline_image_can_take_torch_from_a_local_wheel_folder() -> None:
    """Air-gapped from the CPU index: `--build-context torch-wheels=DIR` (scripts/test_images.sh)."""
    _, stages = deploy_files.parse_dockerfile(PIPELINE)
    by_name = {stage.name: stage for stage in stages}
    assert by_name["torch-wheels"].base == "scratch" and not by_name["torch-wheels"].instructions
    torch_run = next(run for run in by_name["builder"].of("RUN") if "torch==" in run)
    assert "--mount=type=bind,from=torch-wheels,target=/torch-wheels" in torch_run
    assert "--find-links /torch-wheels" in torch_run
    script = (REPO_ROOT / "scripts" / "test_images.sh").read_text(encoding="utf-8")
    assert "torch-wheels=" in script


def dockerignore_allows(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches a path's parents."""
    allowed = True
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            allowed = negate
    return allowed


@pytest.mark.parametrize("dockerfile", deploy_files.dockerfiles(), ids=lambda p: p.name)
def test_dockerignore_lets_in_everything_the_dockerfile_copies(dockerfile: Path) -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    global_args, stages = deploy_files.parse_dockerfile(dockerfile)
    for stage in stages:
        for args in stage.of("COPY"):
            if "--from=" in args:
                continue
            sources = [w for w in args.split() if not w.startswith("--")][:-1]
            for source in sources:
                if source.startswith("${"):
                    continue  # a build argument (MODEL_DIR): checked below
                assert (REPO_ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"
                assert dockerignore_allows(source, patterns), f".dockerignore hides {source}"
    assert dockerignore_allows("models/serving/MLmodel", patterns)
    assert not dockerignore_allows(".venv/bin/python", patterns)
    assert not dockerignore_allows("data/raw/x.json", patterns)
    assert not dockerignore_allows("src/financemath_mlops/__pycache__/x.pyc", patterns)


# --- the compose file ----------------------------------------------------------------------------


def test_compose_default_stack_and_mlops_profile(services: dict[str, Any]) -> None:
    default = {name for name, s in services.items() if not s.get("profiles")}
    mlops = {name for name, s in services.items() if "mlops" in s.get("profiles", [])}
    assert default == {"api", "prometheus", "alertmanager", "grafana"}
    assert {"mlflow", "prefect-server", "prefect-worker"} <= mlops


def test_compose_mlops_profile_keeps_team_stores_in_postgres_and_minio(
    services: dict[str, Any],
) -> None:
    """MLflow on PostgreSQL, artefacts proxied to MinIO (bucket made first), from the pipeline
    image; every credential passes through from docker/.env, which git ignores."""
    mlflow = services["mlflow"]
    assert mlflow["image"].startswith("financemath-mlops/pipeline")
    command = " ".join(mlflow["command"])
    assert "--backend-store-uri=postgresql://" in command and "@postgres:5432/" in command
    assert "--serve-artifacts" in command and "--artifacts-destination=s3://" in command
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "minio-buckets": {"condition": "service_completed_successfully"},
    }
    assert services["minio-buckets"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "mc mb --ignore-existing" in services["minio-buckets"]["command"][0]
    for name in ("postgres", "minio", "minio-buckets", "mlflow"):
        assert services[name]["profiles"] == ["mlops"]
        for key, value in (services[name].get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS):
                assert value is None, f"{name}: {key} must pass through from docker/.env"
    example = (REPO_ROOT / "docker" / ".env.example").read_text(encoding="utf-8")
    needed = {
        k
        for n in ("postgres", "minio", "mlflow")
        for k, v in services[n]["environment"].items()
        if v is None
    }
    assert needed <= {line.split("=")[0] for line in example.splitlines() if "=" in line}
    assert "/docker/.env" in (REPO_ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()


def test_compose_services_have_health_checks_and_no_host_networking(
    services: dict[str, Any],
) -> None:
    for name, service in services.items():
        assert service.get("network_mode") != "host", name
        assert "host" not in (service.get("networks") or []), name
        if service.get("restart") != "no":  # one-shot jobs have nothing to check
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_compose_volumes_are_named_or_read_only_monitoring_binds(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target, *mode = volume.split(":")
            if source == "../models/serving":  # written by `make run`, absent in a clone
                assert (name, target, mode) == ("api", "/models/serving", ["ro"])
            elif source.startswith((".", "/")):
                assert source.startswith("../monitoring/"), f"{name}: bind mount {source}"
                assert mode == ["ro"], f"{name}: {source} must be mounted read-only"
                assert (deploy_files.COMPOSE_FILE.parent / source).exists(), source
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
                used.add(source)
    assert used == declared


def test_compose_serves_the_exported_folder_and_binds_ports_to_loopback(
    services: dict[str, Any],
) -> None:
    """The default stack needs no tracking server: `api` serves the folder `make run` exports;
    the mlops profile's `api-registry` follows the registry. No port is open to the network
    unless FMOPS_BIND_ADDRESS says so."""
    api = services["api"]
    assert api["environment"]["FMOPS_SERVING__MODEL_URI"].endswith(":-/models/serving}")
    assert "FMOPS_MLFLOW__TRACKING_URI" not in api["environment"]
    registry = services["api-registry"]
    assert registry["profiles"] == ["mlops"]
    assert "mlflow:5000" in registry["environment"]["FMOPS_MLFLOW__TRACKING_URI"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("${FMOPS_BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"


def test_our_services_take_fmops_settings_and_no_secret_values(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if not str(service.get("image", "")).startswith(OUR_IMAGES):
            continue
        assert deploy_files.compose_dockerfile(service) in deploy_files.dockerfiles(), name
        environment = service.get("environment") or {}
        assert isinstance(environment, dict), f"{name}: use the mapping form for environment"
        for key, value in environment.items():
            assert key.startswith("FMOPS_") or key.startswith(THIRD_PARTY_ENV), f"{name}: {key}"
            if any(word in key for word in SECRET_WORDS):
                assert value is None, f"{name}: {key} must pass through from the shell"


def test_compose_api_runs_the_image_command(services: dict[str, Any]) -> None:
    """The api service relies on the image CMD and HEALTHCHECK: no second copy to drift."""
    api = services["api"]
    assert "command" not in api and "entrypoint" not in api
    image = deploy_files.image(deploy_files.compose_dockerfile(api), api["build"].get("target"))
    assert api["healthcheck"]["test"] == ["CMD", *image.healthcheck]


def test_compose_mounts_match_the_monitoring_files(services: dict[str, Any]) -> None:
    monitoring = REPO_ROOT / "monitoring"
    prometheus = yaml.safe_load((monitoring / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    api_port = services["api"]["ports"][0].rsplit(":", 1)[1]
    assert f"api:{api_port}" in targets
    for rule_file in prometheus.get("rule_files", []):
        assert (monitoring / "prometheus" / rule_file).is_file()
    assert "../monitoring/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    (manager,) = prometheus["alerting"]["alertmanagers"]
    assert manager["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "../monitoring/alertmanager:/etc/alertmanager:ro" in services["alertmanager"]["volumes"]
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in services["alertmanager"]["command"]

    provisioning = monitoring / "grafana" / "provisioning"
    for datasource_file in (provisioning / "datasources").glob("*.y*ml"):
        for datasource in yaml.safe_load(datasource_file.read_text())["datasources"]:
            assert datasource["url"] == "http://prometheus:9090"
    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    assert grafana_mounts["/etc/grafana/provisioning"] == "../monitoring/grafana/provisioning"
    for provider_file in (provisioning / "dashboards").glob("*.y*ml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            path = provider["options"]["path"]
            assert path in grafana_mounts, f"dashboard provider reads {path}, nothing mounted"
            assert list((deploy_files.COMPOSE_FILE.parent / grafana_mounts[path]).glob("*.json"))


# --- CI wiring -----------------------------------------------------------------------------------


def test_ci_runs_the_readme_check_command_with_the_offline_checks() -> None:
    ci_run = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    # `make test`, then (when wired) `make test-images`, each as a line or a journey.
    runs_make = re.findall(r"^(?:journey \"[^\"]*\" )?(make [\w-]+)\s*$", ci_run, re.MULTILINE)
    assert "make test" in runs_make, runs_make
    # The newcomer's journey first: `make run` on the fresh tree, then its printed serve command.
    journeys = [line for line in ci_run.splitlines() if line.startswith("journey ")]
    assert journeys[:2] == [
        'journey "make run" fresh_run',
        'journey "serve + /ready + /predict" serve_and_predict',
    ]
    assert "  make run 2>&1" in ci_run
    assert "apt-get" not in ci_run  # installs nothing a newcomer's `make test` would not
    if "make test-images" in runs_make:
        assert runs_make.index("make test-images") > runs_make.index("make test")
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/check_offline.sh" in lint
    # The system tools of those checks: installed by `make test` itself (the `tools` target).
    assert re.search(r"^lint:.*\btools\b", makefile, re.MULTILINE)
    system_tools = (REPO_ROOT / "scripts" / "system_tools.sh").read_text(encoding="utf-8")
    assert '"promtool prometheus"' in system_tools
    assert '"docker-compose docker-compose"' in system_tools
    assert "test-images:" in makefile and "scripts/test_images.sh" in makefile
    assert "make test" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")

    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(re.search(r"\bmake\b.*\btest\b", run) for run in runs)
    assert any("check_offline.sh" in run for run in runs)
    assert any("download.pytorch.org/whl/cpu" in v for v in workflow["env"].values())
    uses = [step.get("uses", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert any(u.startswith("docker/build-push-action@") for u in uses)
