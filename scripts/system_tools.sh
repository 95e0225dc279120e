#!/usr/bin/env bash
# The system tools that `make test` (and `make test-images`) need, and how to get them.
#
#   bash scripts/system_tools.sh [GROUP...]     # groups: test (default), browser, images
#
# Each line of a group is "COMMAND DEBIAN-PACKAGE". A tool already on PATH (or in the venv) is
# left alone. Missing tools are installed once, quietly, with apt-get when running as root on
# Debian/Ubuntu; otherwise the script stops at once, naming every missing tool and the command
# that installs it. Outside CI, SKIP_MISSING_TOOLS=1 turns the stop into a loud warning (the
# checks that need a missing tool then say so themselves).
set -uo pipefail
cd "$(dirname "$0")/.."
VENV_BIN=${VENV_BIN:-.venv/bin}

tools_test=(
  "promtool prometheus"
  "docker-compose docker-compose"
  "prometheus-alertmanager prometheus-alertmanager"
  "pg_ctlcluster postgresql"  # the team-stores journey's PostgreSQL (initdb/pg_ctl are off PATH)
)
tools_browser=(
  "chromium chromium"
)
tools_images=(
  "podman podman"
  "buildah buildah"
  "runc runc"
  "mmdebstrap mmdebstrap"
  "catatonit catatonit" # the pause process of `podman kube play` pods (scripts/k8s_play.sh)
)

groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(test)

missing_cmds=()
missing_pkgs=()
for group in "${groups[@]}"; do
  declare -n list="tools_${group//-/_}" 2>/dev/null || { echo "unknown tool group: $group" >&2; exit 2; }
  for entry in "${list[@]}"; do
    cmd=${entry%% *}
    pkg=${entry#* }
    if [ -x "$VENV_BIN/$cmd" ] || command -v "$cmd" >/dev/null 2>&1; then
      continue
    fi
    missing_cmds+=("$cmd")
    missing_pkgs+=("$pkg")
  done
  unset -n list
done

[ ${#missing_cmds[@]} -eq 0 ] && exit 0

# One apt run for everything missing (a package may provide several tools: dedupe).
mapfile -t packages < <(printf '%s\n' "${missing_pkgs[@]}" | sort -u)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system tools (${missing_cmds[*]}): apt-get install ${packages[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if { apt-get -o DPkg::Lock::Timeout=300 update -qq \
    && apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${packages[@]}"; } \
    >/tmp/fmops-apt.log 2>&1; then
    still=()
    for cmd in "${missing_cmds[@]}"; do command -v "$cmd" >/dev/null 2>&1 || still+=("$cmd"); done
    if [ ${#still[@]} -eq 0 ]; then
      exit 0
    fi
    echo "apt-get finished but these are still missing: ${still[*]}" >&2
  else
    echo "apt-get install ${packages[*]} failed; its output: /tmp/fmops-apt.log" >&2
    tail -n 5 /tmp/fmops-apt.log >&2
  fi
fi

sudo_prefix=""
[ "$(id -u)" != 0 ] && sudo_prefix="sudo "
echo "missing system tools: ${missing_cmds[*]}" >&2
echo "install them with:    ${sudo_prefix}apt-get install ${packages[*]}   (Debian/Ubuntu)" >&2
if [ "${SKIP_MISSING_TOOLS:-0}" = 1 ] && [ "${CI:-}" != true ]; then
  echo "SKIP_MISSING_TOOLS=1: going on; the checks that need them will say they skipped" >&2
  exit 0
fi
exit 1
