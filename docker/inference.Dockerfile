# The prediction service: FastAPI + uvicorn on the `serving` extra only (ONNX embeddings, the
# LightGBM text model evaluated with numpy, the MLflow client: mlflow-skinny). No torch, lightgbm,
# scipy, pyarrow or full mlflow, no compiler, no secrets; runs as uid 10001.
#
# Build from the repository root (the build context; see .dockerignore). Name the target: the
# last stage is `with-model`.
#   docker build -f docker/inference.Dockerfile --target runtime -t financemath-mlops/inference .
# The model is fetched from MLflow at start-up; the API key comes from your shell (the service
# refuses to listen on 0.0.0.0 without one unless FMOPS_SERVING__ALLOW_ANONYMOUS=true):
#   docker run -p 127.0.0.1:8000:8000 -e FMOPS_SERVING__API_KEY \
#     -e FMOPS_MLFLOW__TRACKING_URI=http://mlflow.example:5000 \
#     -e FMOPS_SERVING__MODEL_NAME=financemath-regressor -e FMOPS_SERVING__ALIAS=champion ...
# or baked into the image from a local MLflow model folder (see docs/deployment.md):
#   docker build -f docker/inference.Dockerfile --target with-model \
#     --build-arg MODEL_DIR=models/serving -t financemath-mlops/inference:baked .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: a venv with the serving extra and our wheel ---------------------------------------
FROM ${PYTHON_IMAGE} AS builder
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
WORKDIR /build
# No pip or setuptools inside the venv: uv installs into it from outside (--python).
RUN python -m venv --without-pip /opt/venv
# uv itself from its hashed pin (requirements/uv-tool.txt), by the base image's pip, beside the venv.
COPY requirements/uv-tool.txt requirements/uv-tool.txt
RUN python -m pip install --no-cache-dir --require-hashes --no-deps --target /opt/uv \
        -r requirements/uv-tool.txt
# Dependencies first, from the serving lock (`make lock`): every file's sha256 checked, nothing
# outside the lock fetched. This layer is reused until the lock changes.
COPY requirements/serving.txt requirements/serving.txt
RUN /opt/uv/bin/uv pip install --python /opt/venv/bin/python --require-hashes --no-deps \
        -r requirements/serving.txt
# Our package, built as a wheel and installed without touching the dependencies above.
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN /opt/uv/bin/uv pip install --python /opt/venv/bin/python --no-deps . \
    && /opt/uv/bin/uv pip check --python /opt/venv/bin/python \
    && /opt/venv/bin/python -c "import importlib.util as u, sys; heavy = [m for m in ('torch', 'sentence_transformers', 'prefect', 'evidently') if u.find_spec(m)] + [m for m in ('lightgbm', 'scipy', 'sklearn', 'pyarrow', 'matplotlib', 'sqlalchemy', 'flask') if u.find_spec(m)]; sys.exit('serving image must not contain: ' + ', '.join(heavy) if heavy else 0)"

# --- runtime: the venv and the default config; the model comes from MLflow at start-up ----------
FROM ${PYTHON_IMAGE} AS runtime
# No system packages: nothing in the serving venv links libgomp (LightGBM did; serving evaluates
# its text model with numpy since issue 18).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/configs /app/data/predictions /app/mlruns /app/reports \
    && chown 10001:10001 /app \
    && chown -R 10001:10001 /app/data /app/mlruns /app/reports
COPY --from=builder /opt/venv /opt/venv
COPY configs/default.yaml /app/configs/default.yaml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    FMOPS_SERVING__MODEL_NAME=financemath-regressor \
    FMOPS_SERVING__ALIAS=champion
WORKDIR /app
USER 10001:10001
# Fail the build, not the first request, if a shared library is missing.
RUN python -c "import onnxruntime, tokenizers, fastparquet, financemath_mlops.serving.app"
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# The entry point owns the connection limits (header deadline, keep-alive, max connections).
# On 0.0.0.0 it refuses to start without FMOPS_SERVING__API_KEY unless the run passes
# FMOPS_SERVING__ALLOW_ANONYMOUS=true (compose does: its ports are published on 127.0.0.1 only).
# Never set here: `docker run -p 8000:8000` publishes on every interface of the host.
CMD ["python", "-m", "financemath_mlops.serving", "--host", "0.0.0.0", "--port", "8000"]

# --- with-model: the same service with a model folder baked in (--target with-model) ------------
# Last on purpose: builders without stage pruning (podman < 4.4) build every stage before the
# target, and this COPY fails when no model folder exists.
FROM runtime AS with-model
# A folder in the build context holding an MLflow model (its MLmodel file at the top), e.g. from
#   mlflow artifacts download --artifact-uri models:/financemath-regressor@champion \
#     --dst-path models/serving
ARG MODEL_DIR=models/serving
COPY ${MODEL_DIR} /opt/model
RUN test -f /opt/model/MLmodel \
    || { echo "MODEL_DIR=${MODEL_DIR} is not an MLflow model folder (no MLmodel file)" >&2; exit 1; }
ENV FMOPS_SERVING__MODEL_URI=/opt/model
