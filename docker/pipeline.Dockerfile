# The training pipeline and the Prefect worker: the `pipeline` extra on CPU-only torch (about
# 750 MB unpacked instead of the multi-GB CUDA build). Runs as uid 10001 in /app, where the
# source tree lives: the Prefect deployment's entrypoint is a path in it.
#
# Build from the repository root:
#   docker build -f docker/pipeline.Dockerfile -t financemath-mlops/pipeline .
# Air-gapped from the CPU wheel index, with a folder holding torch-2.13.0+cpu's wheel (asked for
# as 2.13.0+cpu, so only that wheel matches; its dependencies come from the lock):
#   docker build -f docker/pipeline.Dockerfile --build-context torch-wheels=DIR \
#     --build-arg TORCH_INDEX_URL=https://pypi.org/simple -t financemath-mlops/pipeline .
# Run the whole pipeline once (offline synthetic sample):
#   docker run --rm financemath-mlops/pipeline python -m financemath_mlops.flows --source sample
# docker/docker-compose.yml (profile mlops) runs it as `prefect worker start` instead.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- torch-wheels: empty unless the build passes a folder of wheels (--build-context) -----------
FROM scratch AS torch-wheels

# --- builder: torch from the CPU wheel index, then the pipeline extra, then our package ---------
FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# uv installs (same hashed locks as pip would; measured faster: docs/deployment.md#images). The
# runtime stage copies the venv only, not uv: no cache left behind, files copied rather than
# linked, bytecode compiled now (the runtime user cannot write it and PYTHONDONTWRITEBYTECODE is
# set: without it every start would compile every module), and the system's CA store trusted as
# Debian's pip trusts it (a base made with the host's extra CA certificates, scripts/test_images.sh).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_SYSTEM_CERTS=1
WORKDIR /app
RUN python -m venv --without-pip /opt/venv
# uv itself from its hashed pin (requirements/uv-tool.txt), by the base image's pip, beside the venv.
COPY requirements/uv-tool.txt requirements/uv-tool.txt
RUN python -m pip install --no-cache-dir --require-hashes --no-deps --target /opt/uv \
        -r requirements/uv-tool.txt
# The Makefile's TORCH_SPEC, asked for as its CPU build by name (+cpu: a CUDA build cannot match,
# whichever index has it). --no-deps: torch's own dependencies are in the pipeline lock, hashed.
RUN --mount=type=bind,from=torch-wheels,target=/torch-wheels \
    /opt/uv/bin/uv pip install --python /opt/venv/bin/python --no-deps \
        --find-links /torch-wheels --index-url "${TORCH_INDEX_URL}" torch==2.13.0+cpu
# The pipeline lock (`make lock`): every file's sha256 checked, nothing outside the lock fetched.
COPY requirements/pipeline.txt requirements/pipeline.txt
RUN /opt/uv/bin/uv pip install --python /opt/venv/bin/python --require-hashes --no-deps \
        -r requirements/pipeline.txt
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
COPY configs ./configs
COPY prefect.yaml ./
# Editable, so the package's project root is /app: `flows deploy` registers /app as the source.
RUN /opt/uv/bin/uv pip install --python /opt/venv/bin/python --no-deps --editable . \
    && /opt/uv/bin/uv pip check --python /opt/venv/bin/python

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# LightGBM links libgomp. Not version-pinned: Debian drops superseded security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
# Writable for uid 10001: data, the local MLflow store, reports, caches (ONNX export, Prefect,
# and the UI build `prefect server` writes at start: inside site-packages it would be root's and
# the UI would answer 404) and /app itself for new files; the source tree stays root's.
RUN mkdir -p /app/data/predictions /app/mlruns /app/reports /app/.cache/prefect \
    && chown 10001:10001 /app \
    && chown -R 10001:10001 /app/data /app/mlruns /app/reports /app/.cache
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    PREFECT_HOME=/app/.cache/prefect \
    PREFECT_SERVER_UI_STATIC_DIRECTORY=/app/.cache/prefect/ui \
    PREFECT_SERVER_ANALYTICS_ENABLED=false
WORKDIR /app
USER 10001:10001
# As the runtime user, so whatever an import writes under PREFECT_HOME stays writable.
RUN python -c "import torch, lightgbm, prefect, financemath_mlops.flows.pipeline"
# A batch job: the compose file gives the long-running worker and server their own checks.
HEALTHCHECK NONE
CMD ["python", "-m", "financemath_mlops.flows"]
