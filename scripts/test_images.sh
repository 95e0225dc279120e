#!/usr/bin/env bash
# make test-images: build both images and run them as production would, with no registry needed.
#
#   bash scripts/test_images.sh          # or: make test-images
#
# Engine: docker when a daemon answers, else podman (installed with buildah, runc and mmdebstrap by
# scripts/system_tools.sh when root). Podman reads only the project's docker/podman/*.conf
# (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF) and keeps its images in a per-run store under a
# temporary folder: nothing of the host's container setup is read or changed.
# Base image: PYTHON_IMAGE if it can be pulled, else a Python 3.11 base made here from Debian
# packages (mmdebstrap, the host's apt sources and extra CA certificates): air-gapped builds.
# Checks, for the inference image with the model folder mounted read-only and then baked in
# (--target with-model): /health, /ready, /predict, /predict/batch 200; /metrics has the request
# series and fmops_model_info with the model's name and version; the server runs as uid 10001;
# the HEALTHCHECK passes; the prediction log is written (these runs pass
# FMOPS_SERVING__ALLOW_ANONYMOUS=true: no key, published on 127.0.0.1 only). Started with no model
# and an unreachable tracking server: /health within 5 s, /ready 503 with a reason. Started with
# neither a key nor anonymous access: exit 2 naming both settings. The pipeline image is built when
# torch can reach the build (its CPU index, or a local wheel passed as a build context) and its
# Prefect UI must answer 200. The inference image within 600 MB and the serving venv within 450 MB
# (tests/images/test_serving_venv.py, issue 18). Prints sizes and times, writes
# reports/images/results.json, and
# removes every container, image, volume and temporary file it made. Bounded: IMAGES_TIMEOUT_S.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
PYTHON_IMAGE=${PYTHON_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
MODEL_DIR=${MODEL_DIR:-models/serving}
IMAGES_TIMEOUT_S=${IMAGES_TIMEOUT_S:-1500}
REPORT_DIR=$ROOT/reports/images
RUN_ID=fmops-test-$$
START_S=$SECONDS

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/fmops-images.XXXXXX")
mkdir -p "$REPORT_DIR" "$WORK/tmp"
: >"$REPORT_DIR/results.tsv"
: >"$REPORT_DIR/engine.log"
IMAGES_MADE=()
FAILED=0

log() { printf '[test-images %4ds] %s\n' $((SECONDS - START_S)) "$*" >&2; }
fail() {
  log "FAIL: $*"
  FAILED=1
}
die() {
  log "FAIL: $*"
  exit 1
}
record() { printf '%s\t%s\n' "$1" "$2" >>"$REPORT_DIR/results.tsv"; } # key, value
left_s() { echo $((IMAGES_TIMEOUT_S - (SECONDS - START_S))); }
bounded() { # bounded SECONDS CMD...: the command, never past the overall budget
  local limit=$1 left
  shift
  left=$(left_s)
  [ "$left" -gt 0 ] || die "out of time (IMAGES_TIMEOUT_S=$IMAGES_TIMEOUT_S)"
  [ "$limit" -lt "$left" ] || limit=$left
  [ "$1" != engine ] || { shift; set -- "${ENGINE_CMD[@]}" "$@"; } # timeout runs commands only
  timeout --kill-after=10 "$limit" "$@"
}

# --- engine ---------------------------------------------------------------------------------------
if command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; then
  ENGINE=docker
  ENGINE_CMD=(docker)
else
  bash scripts/system_tools.sh images || die "podman, buildah, runc and mmdebstrap are needed"
  ENGINE=podman
  export CONTAINERS_CONF=$ROOT/docker/podman/containers.conf
  export CONTAINERS_STORAGE_CONF=$ROOT/docker/podman/storage.conf
  export TMPDIR=$WORK/tmp # buildah's scratch space
  mkdir -p "$WORK/storage" "$WORK/run" "$WORK/libpod"
  ENGINE_CMD=(podman --root "$WORK/storage" --runroot "$WORK/run" --tmpdir "$WORK/libpod")
  # Docker's image format: the OCI format has no HEALTHCHECK, and buildah would drop it.
  export BUILDAH_FORMAT=docker
fi
engine() { "${ENGINE_CMD[@]}" "$@"; }
log "engine: $ENGINE ($(engine --version))"
record engine "$ENGINE"

cleanup() {
  local status=$?
  set +e
  log "cleaning up"
  engine ps -a --filter "name=$RUN_ID" --format '{{.Names}}' 2>/dev/null |
    while read -r name; do engine rm -f "$name" >/dev/null 2>&1; done
  if [ "$ENGINE" = docker ]; then
    for image in "${IMAGES_MADE[@]}"; do engine rmi -f "$image" >/dev/null 2>&1; done
  else
    # The per-run store goes whole (images, build cache, interrupted builds): first its overlay
    # mounts, deepest first.
    awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r |
      while read -r mnt; do umount "$mnt" 2>/dev/null || umount -l "$mnt"; done
  fi
  rm -rf "$WORK"
  if [ "$status" = 0 ] && [ "$FAILED" = 0 ]; then
    log "passed in $((SECONDS - START_S)) s"
  else
    log "FAILED (logs: $REPORT_DIR)"
    [ "$status" != 0 ] || status=1
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$VENV_BIN/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
image_size_mb() { engine image inspect -f '{{.Size}}' "$1" | awk '{printf "%d", $1 / 1e6}'; }

build() { # build KEY TAG ARGS...: timed, log under reports/images/
  local key=$1 tag=$2 started
  shift 2
  started=$SECONDS
  log "building $key ($tag)"
  if ! bounded "$IMAGES_TIMEOUT_S" engine build --network=host -t "$tag" "$@" >"$REPORT_DIR/build-$key.log" 2>&1; then
    tail -n 30 "$REPORT_DIR/build-$key.log" >&2
    die "build of $key failed (log: reports/images/build-$key.log)"
  fi
  IMAGES_MADE+=("$tag")
  record "build_s.$key" $((SECONDS - started))
  record "size_mb.$key" "$(image_size_mb "$tag")"
  log "built $key in $((SECONDS - started)) s, $(image_size_mb "$tag") MB"
}

# --- the Python base ------------------------------------------------------------------------------
debian_base() { # a Python 3.11 image from Debian packages, tagged $1
  local tag=$1 suite sources started=$SECONDS
  local hooks=()
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  [ -n "$suite" ] || die "cannot tell the Debian release from /etc/os-release"
  sources=${APT_SOURCES:-/etc/apt/sources.list.d/debian.sources}
  [ -f "$sources" ] || sources=/etc/apt/sources.list
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    # pip and apt in the build must trust what the host trusts (TLS-inspecting egress)
    hooks+=(--customize-hook='copy-in /usr/local/share/ca-certificates /usr/local/share'
      --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null')
  fi
  log "no registry: building a Python 3.11 base from Debian $suite packages ($sources)"
  # Merged /usr by mmdebstrap's own hook, not the usrmerge package (which pulls in perl, ~50 MB);
  # no docs, man pages, locales: 248 -> 152 MB, so the inference image stays within 600 MB.
  local trim=()
  local dir
  for dir in doc man info locale lintian; do trim+=(--dpkgopt="path-exclude=/usr/share/$dir/*"); done
  bounded 600 mmdebstrap --quiet --variant=minbase \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "${trim[@]}" \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --include=python3.11,python3.11-venv,python3-pip,python-is-python3,ca-certificates \
    "${hooks[@]}" --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$suite" "$WORK/base.tar" "$sources" >"$REPORT_DIR/base.log" 2>&1 ||
    { tail -n 20 "$REPORT_DIR/base.log" >&2; die "mmdebstrap failed"; }
  # An imported root file system has no config: give it what python:3.11-slim sets.
  engine import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$WORK/base.tar" "$tag" \
    >>"$REPORT_DIR/base.log" 2>&1
  rm -f "$WORK/base.tar"
  IMAGES_MADE+=("$tag")
  record base "debian-$suite-mmdebstrap"
  record build_s.base $((SECONDS - started))
  record size_mb.base "$(image_size_mb "$tag")"
}

if engine image exists "$PYTHON_IMAGE" 2>/dev/null ||
  engine image inspect "$PYTHON_IMAGE" >/dev/null 2>&1; then
  log "base: $PYTHON_IMAGE (present)"
  record base "$PYTHON_IMAGE"
elif bounded 120 engine pull -q "$PYTHON_IMAGE" >"$REPORT_DIR/pull.log" 2>&1; then
  log "base: $PYTHON_IMAGE (pulled)"
  IMAGES_MADE+=("$PYTHON_IMAGE")
  record base "$PYTHON_IMAGE"
else
  log "cannot pull $PYTHON_IMAGE: $(tail -n 1 "$REPORT_DIR/pull.log")"
  PYTHON_IMAGE=localhost/fmops-python:3.11-$RUN_ID
  debian_base "$PYTHON_IMAGE"
fi
log "base image: $PYTHON_IMAGE"

# --- the model folder -----------------------------------------------------------------------------
if [ ! -f "$MODEL_DIR/MLmodel" ]; then
  log "no model folder at $MODEL_DIR: running make run"
  bounded 600 make run >"$REPORT_DIR/make-run.log" 2>&1 ||
    { tail -n 20 "$REPORT_DIR/make-run.log" >&2; die "make run failed"; }
  [ -f "$MODEL_DIR/MLmodel" ] || die "make run did not export a model folder to $MODEL_DIR"
fi
MODEL_ABS=$(cd "$MODEL_DIR" && pwd)
# The service runs as uid 10001: a folder only its owner may read cannot be served, mounted or baked.
unreadable=$(find "$MODEL_ABS" \( -type d ! -perm -o=rx \) -o \( -type f ! -perm -o=r \) | head -n 3)
[ -z "$unreadable" ] || die "$MODEL_DIR is not readable by other users (uid 10001 in the image): $unreadable"
# The registry's name and version travel with an exported folder (MLflow's registered_model_meta).
read -r MODEL_NAME MODEL_VERSION < <("$VENV_BIN/python" - "$MODEL_ABS" <<'EOF'
import sys
from pathlib import Path

import yaml
from financemath_mlops.runs import REGISTERED_META

meta_file = Path(sys.argv[1]) / REGISTERED_META
meta = yaml.safe_load(meta_file.read_text()) if meta_file.is_file() else {}
print(meta.get("model_name") or "-", meta.get("model_version") or "-")
EOF
)
log "model folder: $MODEL_DIR (name $MODEL_NAME, version $MODEL_VERSION)"

# --- checks of a running inference container ------------------------------------------------------
QUESTION='{"question": "What is the future value of $1,000 at 5% for 3 years?", "tables": [], "topic": "Quantitative Analysis & Valuation"}'

http_code() { curl -s -o "$WORK/body" -w '%{http_code}' --max-time "${2:-10}" "$1" || true; }

wait_for_code() { # wait_for_code URL CODE SECONDS CONTAINER: 0 when URL answered CODE in time
  local url=$1 want=$2 limit=$3 container=$4 deadline=$((SECONDS + $3))
  while [ "$SECONDS" -lt "$deadline" ] && [ "$(left_s)" -gt 0 ]; do
    [ "$(http_code "$url" 5)" = "$want" ] && return 0
    [ "$(engine inspect -f '{{.State.Running}}' "$container" 2>/dev/null)" = true ] || {
      engine logs "$container" 2>&1 | tail -n 20 >&2
      fail "$container exited while waiting for $url"
      return 1
    }
    sleep 0.5
  done
  fail "$url did not answer $want within $limit s"
  engine logs "$container" 2>&1 | tail -n 20 >&2
  return 1
}

healthcheck() { # the image's HEALTHCHECK command, run the engine's way
  if [ "$ENGINE" = podman ]; then
    engine healthcheck run "$1" >/dev/null # no systemd timers here: run it on demand
  else
    local test_json
    test_json=$(engine inspect -f '{{json .Config.Healthcheck.Test}}' "$1")
    mapfile -t cmd < <("$VENV_BIN/python" -c 'import json, sys; t = json.loads(sys.argv[1]); print("\n".join(t[1:] if t[0] == "CMD" else ["sh", "-c", t[1]]))' "$test_json")
    engine exec "$1" "${cmd[@]}"
  fi
}

check_inference() { # check_inference KEY IMAGE [RUN ARGS...]
  local key=$1 image=$2 name=$RUN_ID-$1 port started base ready_ms uid
  shift 2
  port=$(free_port)
  base=http://127.0.0.1:$port
  started=$(now_ms)
  # (podman without systemd logs that it cannot schedule health checks: engine.log)
  # No API key: the CMD listens on 0.0.0.0, refused without a key unless anonymous access is
  # asked for; asked for here, the port is published on 127.0.0.1 only.
  engine run -d --name "$name" -p "127.0.0.1:$port:8000" -e FMOPS_SERVING__ALLOW_ANONYMOUS=true \
    "$@" "$image" >/dev/null 2>>"$REPORT_DIR/engine.log"
  wait_for_code "$base/ready" 200 240 "$name" || return 0
  ready_ms=$(($(now_ms) - started))
  record "ready_s.$key" "$(awk -v ms="$ready_ms" 'BEGIN {printf "%.1f", ms / 1000}')"
  log "$key: ready in $((ready_ms / 1000)) s"
  [ "$(http_code "$base/health")" = 200 ] || fail "$key: /health $(cat "$WORK/body")"
  local code
  code=$(curl -s -o "$WORK/body" -w '%{http_code}' --max-time 60 -H 'content-type: application/json' -d "$QUESTION" "$base/predict")
  [ "$code" = 200 ] || fail "$key: /predict $code $(head -c 300 "$WORK/body")"
  grep -q '"prediction"' "$WORK/body" || fail "$key: /predict has no prediction"
  code=$(curl -s -o "$WORK/body" -w '%{http_code}' --max-time 60 -H 'content-type: application/json' -d "{\"items\": [$QUESTION, $QUESTION]}" "$base/predict/batch")
  [ "$code" = 200 ] || fail "$key: /predict/batch $code $(head -c 300 "$WORK/body")"
  [ "$(http_code "$base/metrics")" = 200 ] || fail "$key: /metrics"
  grep -q '^fmops_http_requests_total{.*endpoint="/predict"' "$WORK/body" ||
    fail "$key: /metrics has no fmops_http_requests_total for /predict"
  local info
  info=$(grep '^fmops_model_info{' "$WORK/body" | head -n 1)
  [ -n "$info" ] || fail "$key: /metrics has no fmops_model_info"
  if [ "$MODEL_NAME" != - ]; then
    [[ $info == *"name=\"$MODEL_NAME\""* && $info == *"version=\"$MODEL_VERSION\""* ]] ||
      fail "$key: fmops_model_info is not $MODEL_NAME v$MODEL_VERSION: $info"
  fi
  uid=$(engine exec "$name" sh -c 'awk "/^Uid:/ {print \$2}" /proc/1/status')
  [ "$uid" = 10001 ] || fail "$key: the server runs as uid $uid, not 10001"
  healthcheck "$name" || fail "$key: the HEALTHCHECK failed"
  # The log is written in batches; a graceful stop writes what is queued (as a redeploy would).
  engine stop -t 30 "$name" >/dev/null
  rm -rf "$WORK/predictions"
  engine cp "$name:/app/data/predictions" "$WORK/predictions"
  local logged
  logged=$("$VENV_BIN/python" -c 'import pathlib, sys, pyarrow.parquet as pq; print(sum(pq.ParquetFile(f).metadata.num_rows for f in pathlib.Path(sys.argv[1]).rglob("*.parquet")))' "$WORK/predictions")
  [ "$logged" -ge 3 ] || fail "$key: the prediction log holds $logged of the 3 predictions"
  engine rm -f "$name" >/dev/null 2>>"$REPORT_DIR/engine.log"
  log "$key: /health /ready /predict /predict/batch /metrics, uid 10001, HEALTHCHECK, prediction log: checked"
}

# --- the inference image --------------------------------------------------------------------------
INFERENCE=localhost/financemath-mlops/inference:$RUN_ID
BAKED=localhost/financemath-mlops/inference:$RUN_ID-baked
build inference "$INFERENCE" -f docker/inference.Dockerfile --target runtime \
  --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" .
build inference_with_model "$BAKED" -f docker/inference.Dockerfile --target with-model \
  --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg MODEL_DIR="$MODEL_DIR" .

check_inference mounted "$INFERENCE" -v "$MODEL_ABS:/opt/model:ro" -e FMOPS_SERVING__MODEL_URI=/opt/model
check_inference baked "$BAKED"

# No model and an unreachable tracking server: alive at once, not ready, and saying why.
name=$RUN_ID-nomodel
port=$(free_port)
started=$(now_ms)
# (anonymous: published on 127.0.0.1 only, as above)
engine run -d --name "$name" -p "127.0.0.1:$port:8000" -e FMOPS_SERVING__ALLOW_ANONYMOUS=true \
  -e FMOPS_MLFLOW__TRACKING_URI=http://192.0.2.1:5000 "$INFERENCE" >/dev/null 2>>"$REPORT_DIR/engine.log"
if wait_for_code "http://127.0.0.1:$port/health" 200 30 "$name"; then
  health_ms=$(($(now_ms) - started))
  record health_s.no_model "$(awk -v ms="$health_ms" 'BEGIN {printf "%.1f", ms / 1000}')"
  [ "$health_ms" -le 5000 ] || fail "no model: /health took $health_ms ms (limit 5000)"
  code=$(http_code "http://127.0.0.1:$port/ready")
  [ "$code" = 503 ] || fail "no model: /ready $code, not 503"
  reason=$("$VENV_BIN/python" -c 'import json, sys; b = json.load(open(sys.argv[1])); print((b.get("error") or {}).get("message") or b.get("reason") or "")' "$WORK/body" 2>/dev/null || true)
  [ -n "$reason" ] || fail "no model: /ready gives no reason: $(head -c 300 "$WORK/body")"
  log "no model: /health in $health_ms ms, /ready $code: $reason"
fi
engine rm -f "$name" >/dev/null 2>>"$REPORT_DIR/engine.log"

# Neither a key nor anonymous access asked for: the CMD (0.0.0.0) stops at once with exit 2,
# naming both settings, before anything listens.
name=$RUN_ID-nokey
engine run -d --name "$name" -p "127.0.0.1:$(free_port):8000" "$INFERENCE" >/dev/null 2>>"$REPORT_DIR/engine.log"
deadline=$((SECONDS + 60))
while [ "$(engine inspect -f '{{.State.Running}}' "$name" 2>/dev/null)" = true ] && [ "$SECONDS" -lt "$deadline" ]; do
  sleep 0.5
done
code=$(engine inspect -f '{{.State.ExitCode}}' "$name" 2>/dev/null || echo none)
refusal=$(engine logs "$name" 2>&1 | grep '^error:' | head -n 1 || true)
if [ "$code" = 2 ] && [[ $refusal == *FMOPS_SERVING__API_KEY*FMOPS_SERVING__ALLOW_ANONYMOUS* ]]; then
  log "no key on 0.0.0.0: refused, exit 2: ${refusal:0:100}..."
else
  fail "no key on 0.0.0.0: exit $code, not a refusal (exit 2 naming the settings): $refusal"
fi
engine rm -f "$name" >/dev/null 2>>"$REPORT_DIR/engine.log"

# --- the serving install's budgets (issue 18) ------------------------------------------------------
# The image against 600 MB; the venv of the serving lock against 450 MB, with nothing forbidden in
# it and the same predictions as lightgbm (tests/images/test_serving_venv.py, a venv in a temp dir).
size=$(image_size_mb "$INFERENCE")
record budget_mb.inference 600
base_mb=$(image_size_mb "$PYTHON_IMAGE")
if [ "$size" -le 600 ]; then
  log "inference image $size MB, within its 600 MB budget (base $base_mb MB)"
else
  fail "inference image is $size MB, over its 600 MB budget (base $base_mb MB)"
fi
started=$SECONDS
if FMOPS_TEST_SERVING_VENV=1 bounded 1800 "$VENV_BIN/pytest" -q -p no:cacheprovider \
  tests/images/test_serving_venv.py >"$REPORT_DIR/serving-venv.log" 2>&1; then
  record serving_venv_mb "$("$VENV_BIN/python" -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["total_bytes"] / 1e6))' "$REPORT_DIR/serving-venv.json")"
  log "serving venv: $(tail -n 1 "$REPORT_DIR/serving-venv.log") in $((SECONDS - started)) s"
else
  tail -n 30 "$REPORT_DIR/serving-venv.log" >&2
  fail "the serving venv test failed (tests/images/test_serving_venv.py)"
fi

# --- the pipeline image ---------------------------------------------------------------------------
PIPELINE=localhost/financemath-mlops/pipeline:$RUN_ID
pipeline_args=()
if curl -fsS -o /dev/null --max-time 15 "$TORCH_INDEX_URL/torch/" 2>/dev/null; then
  log "torch: from $TORCH_INDEX_URL"
elif mkdir -p "$WORK/torch-wheels" &&
  bounded 300 "$VENV_BIN/python" -m pip download -q --no-index --no-deps --only-binary=:all: \
    -d "$WORK/torch-wheels" "$TORCH_SPEC" >"$REPORT_DIR/torch-wheel.log" 2>&1; then
  # The host's pip finds the wheel on disk (find-links): hand that folder to the build.
  log "torch: $TORCH_INDEX_URL unreachable; the host's wheel $(ls "$WORK/torch-wheels") goes in as a build context"
  pipeline_args=(--build-context "torch-wheels=$WORK/torch-wheels"
    --build-arg TORCH_INDEX_URL=https://pypi.org/simple)
else
  pipeline_args=(skip)
fi
if [ "${pipeline_args[0]:-}" = skip ]; then
  log "pipeline image SKIPPED: $TORCH_INDEX_URL is unreachable and the host's pip has no $TORCH_SPEC wheel on disk"
  record pipeline skipped
elif [ "$(left_s)" -lt 400 ]; then
  fail "pipeline image: only $(left_s) s left of IMAGES_TIMEOUT_S=$IMAGES_TIMEOUT_S"
else
  build pipeline "$PIPELINE" -f docker/pipeline.Dockerfile --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" \
    "${pipeline_args[@]}" .
  rm -rf "$WORK/torch-wheels"
  name=$RUN_ID-prefect
  port=$(free_port)
  started=$(now_ms)
  engine run -d --name "$name" -p "127.0.0.1:$port:4200" "$PIPELINE" \
    prefect server start --host 0.0.0.0 --port 4200 >/dev/null 2>>"$REPORT_DIR/engine.log"
  if wait_for_code "http://127.0.0.1:$port/api/health" 200 180 "$name"; then
    record ready_s.prefect_server "$(awk -v ms="$(($(now_ms) - started))" 'BEGIN {printf "%.1f", ms / 1000}')"
    code=$(curl -s -L -o "$WORK/body" -w '%{http_code}' --max-time 30 -H 'accept: text/html' "http://127.0.0.1:$port/")
    [ "$code" = 200 ] && grep -qi '<html' "$WORK/body" || fail "pipeline: the Prefect UI answers $code"
    uid=$(engine exec "$name" sh -c 'awk "/^Uid:/ {print \$2}" /proc/1/status')
    [ "$uid" = 10001 ] || fail "pipeline: prefect server runs as uid $uid, not 10001"
    log "pipeline: Prefect API and UI ($code) answer, uid $uid"
  fi
  engine rm -f "$name" >/dev/null 2>>"$REPORT_DIR/engine.log"
fi

# --- report ---------------------------------------------------------------------------------------
record total_s $((SECONDS - START_S))
"$VENV_BIN/python" - "$REPORT_DIR" <<'EOF'
import json, sys
from pathlib import Path

folder = Path(sys.argv[1])
rows = [line.split("\t", 1) for line in (folder / "results.tsv").read_text().splitlines() if line]
results = {key: value for key, value in rows}
(folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
print(f"\n{'measure':<34} value")
for key, value in rows:
    print(f"{key:<34} {value}")
print(f"(written to {folder / 'results.json'})")
EOF
[ "$ENGINE" != podman ] || PODMAN_OPTS="--root $WORK/storage --runroot $WORK/run --tmpdir $WORK/libpod" VENV_BIN=$VENV_BIN bash scripts/k8s_play.sh "$BAKED" || fail "podman kube play of deploy/k8s/overlays/dev (scripts/k8s_play.sh)"
[ "$FAILED" = 0 ]
