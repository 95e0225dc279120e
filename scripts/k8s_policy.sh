#!/usr/bin/env bash
# Policy check of deploy/k8s with checkov's Kubernetes policies (run by scripts/check_offline.sh).
#
#   bash scripts/k8s_policy.sh [RENDERED-DIR]   # default: render here (scripts/k8s_check.py --output)
#
# Renders every overlay plus the Prefect work pool's Job (scripts/k8s_check.py --output) and runs
# checkov on them, offline (--skip-download: no Prisma Cloud guidelines or policies fetched).
# Every failed check fails the run; the only exceptions are `checkov.io/skipN` annotations on the
# object itself, each with its reason (deploy/k8s/base/inference-deployment.yaml, the overlays).
# checkov pins boto3 and friends exactly, so it lives in its own venv, installed on first use
# from its hashed lock requirements/checkov-tool.txt (every file's sha256 checked, nothing else
# fetched) into a per-user tool cache keyed by that file's hash, by scripts/tool_venv.sh (the
# installer DVC's and the previous MLflow's venvs share; uv, else pip): a fresh clone on the same
# machine reuses it, a changed pin gets a new one. CHECKOV_VENV overrides the location.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN=${VENV_BIN:-.venv/bin}
CHECKOV_VERSION=3.3.30 # requirements/checkov-tool.in pins it
# The venv is made from the interpreter behind the project's venv, not from the venv itself.
python_bin=$("$VENV_BIN/python" -c 'import os, sys; print(os.path.realpath(sys.executable))')
TOOL_BIN=$(PYTHON=$python_bin TOOL_VENV=${CHECKOV_VENV:-} bash scripts/tool_venv.sh checkov)

if [ $# -ge 1 ]; then
  RENDERED=$1
else
  RENDERED=$(mktemp -d "${TMPDIR:-/tmp}/fmops-k8s-policy.XXXXXX")
  trap 'rm -rf "$RENDERED"' EXIT
  "$VENV_BIN/python" scripts/k8s_check.py --output "$RENDERED" >/dev/null
fi
# No telemetry, no download, no upload; bounded: checkov reads a handful of local files.
BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false timeout 300 \
  "$TOOL_BIN/checkov" --directory "$RENDERED" --framework kubernetes --skip-download \
  --compact --quiet
echo "checkov $CHECKOV_VERSION: no failed Kubernetes policy (skips are annotated with reasons)"
