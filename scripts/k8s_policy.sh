#!/usr/bin/env bash
# Policy check of deploy/k8s with checkov's Kubernetes policies (run by scripts/check_offline.sh).
#
#   bash scripts/k8s_policy.sh [RENDERED-DIR]   # default: render here (scripts/k8s_check.py --output)
#
# Renders every overlay plus the Prefect work pool's Job (scripts/k8s_check.py --output) and runs
# checkov on them, offline (--skip-download: no Prisma Cloud guidelines or policies fetched).
# Every failed check fails the run; the only exceptions are `checkov.io/skipN` annotations on the
# object itself, each with its reason (deploy/k8s/base/inference-deployment.yaml, the overlays).
# checkov pins boto3 and friends exactly, so it lives in its own venv inside the project's
# (.venv/tools/checkov), installed on first use from requirements/checkov-tool.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_BIN=${VENV_BIN:-.venv/bin}
CHECKOV_VERSION=3.3.30
TOOL_VENV=$(dirname "$VENV_BIN")/tools/checkov

if [ ! -x "$TOOL_VENV/bin/checkov" ] ||
  [ "$("$TOOL_VENV/bin/checkov" --version 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  echo "installing checkov $CHECKOV_VERSION into $TOOL_VENV (once)" >&2
  python_bin=$("$VENV_BIN/python" -c 'import sys; print(sys.executable)')
  "$python_bin" -m venv --clear "$TOOL_VENV"
  timeout 900 "$TOOL_VENV/bin/pip" install -q --disable-pip-version-check \
    -c requirements/checkov-tool.txt "checkov==$CHECKOV_VERSION" >&2
fi

if [ $# -ge 1 ]; then
  RENDERED=$1
else
  RENDERED=$(mktemp -d "${TMPDIR:-/tmp}/fmops-k8s-policy.XXXXXX")
  trap 'rm -rf "$RENDERED"' EXIT
  "$VENV_BIN/python" scripts/k8s_check.py --output "$RENDERED" >/dev/null
fi
# No telemetry, no download, no upload; bounded: checkov reads a handful of local files.
BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false timeout 300 \
  "$TOOL_VENV/bin/checkov" --directory "$RENDERED" --framework kubernetes --skip-download \
  --compact --quiet
echo "checkov $CHECKOV_VERSION: no failed Kubernetes policy (skips are annotated with reasons)"
