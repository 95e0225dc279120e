#!/usr/bin/env bash
# A tool that cannot share the project's lock, in its own venv, from its own hashed lock:
#   bash scripts/tool_venv.sh TOOL     TOOL: dvc | mlflow-previous | checkov
# prints the venv's bin folder (the only line on stdout; progress and errors on stderr).
# requirements/TOOL-tool.in names the tool and says why it lives apart; `make lock` resolves it
# into requirements/TOOL-tool.txt with every file's sha256. The install is as strict as the
# project's (scripts/install.sh): `install --require-hashes --no-deps -r requirements/TOOL-tool.txt`,
# so a file whose hash is not in the lock is refused and nothing the lock does not name is fetched;
# then `pip check`. With uv (bootstrapped by scripts/install.sh uv, pip's sources passed to it by
# scripts/uv_pip.py), else with pip, saying so; INSTALLER=pip forces pip, INSTALLER=uv forbids the
# fallback.
# Where: a per-user tool cache keyed by the lock's hash (as pre-commit keeps its hook envs), made
# once: ${XDG_CACHE_HOME:-~/.cache}/financemath-mlops/TOOL-<hash>, a fresh clone on the same
# machine reuses it and a changed pin gets a new one. TOOL_VENV overrides the place. The venv is
# built in a temporary folder beside it and published by creating the symlink TOOL-<hash> -> that
# folder, one atomic step that fails if a concurrent install got there first (its venv is then
# used, ours removed): a half-made venv is never used. (A venv cannot be renamed: its scripts name
# their interpreter by absolute path, so the folder keeps the name it was built under.)
# PYTHON: the interpreter the venv is made from (default python3; the locks are for CPython 3.11).
# Bounded: TOOL_INSTALL_TIMEOUT_S (default 900) for the install.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "tool_venv.sh: $*" >&2; }

TOOL=${1:-}
LOCK=requirements/$TOOL-tool.txt
if [ -z "$TOOL" ] || [ "$TOOL" = uv ] || [ ! -f "$LOCK" ]; then
  known=$(find requirements -name '*-tool.in' -printf '%f\n' | sed 's/-tool\.in$//' | sort | paste -sd ' ')
  say "unknown tool '$TOOL': one of: $known (requirements/<tool>-tool.txt)"
  exit 2
fi
INSTALLER=${INSTALLER:-auto}
case $INSTALLER in
  auto | uv | pip) ;;
  *) say "INSTALLER=$INSTALLER: auto (uv, else pip), uv or pip"; exit 2 ;;
esac
PYTHON=${PYTHON:-python3}
TIMEOUT_S=${TOOL_INSTALL_TIMEOUT_S:-900}
CACHE=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/financemath-mlops
VENV=${TOOL_VENV:-$CACHE/$TOOL-$(sha256sum "$LOCK" | cut -c1-12)}

if [ -f "$VENV/.complete" ]; then # only a finished install is ever published
  echo "$VENV/bin"
  exit 0
fi

started=$SECONDS
mkdir -p "$(dirname "$VENV")"
tmp=$(mktemp -d "$VENV.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
say "installing $TOOL from $LOCK into $VENV (once per lock)"
# No pip in the venv: the installer runs outside it (uv --python, pip --python), as the images do.
"$PYTHON" -m venv --without-pip "$tmp"

uv=
if [ "$INSTALLER" != pip ]; then
  if uv=$(bash scripts/install.sh uv); then
    INSTALLER=uv
  elif [ "$INSTALLER" = uv ]; then
    say "uv could not be installed from requirements/uv-tool.txt (INSTALLER=uv: no fallback)"
    exit 1
  else
    say "uv could not be installed from requirements/uv-tool.txt: installing with pip instead (slower, same lock and hashes)"
    INSTALLER=pip
  fi
fi

status=0
if [ "$INSTALLER" = uv ]; then
  # As scripts/install.sh: where Python writes no bytecode, compile it once here.
  [ -z "${PYTHONDONTWRITEBYTECODE:-}" ] || export UV_COMPILE_BYTECODE=1
  # uv_pip.py runs with $PYTHON, whose pip reads the pip.conf files and PIP_* variables
  timeout --kill-after=10 "$TIMEOUT_S" "$PYTHON" scripts/uv_pip.py "$uv" install \
    --python "$tmp/bin/python" --quiet --require-hashes --no-deps -r "$LOCK" || status=$?
  [ "$status" != 0 ] || "$uv" pip check --quiet --python "$tmp/bin/python" || status=$?
else
  timeout --kill-after=10 "$TIMEOUT_S" "$PYTHON" -m pip --python "$tmp/bin/python" install -q \
    --disable-pip-version-check --require-hashes --no-deps -r "$LOCK" || status=$?
  [ "$status" != 0 ] || "$PYTHON" -m pip --python "$tmp/bin/python" check >&2 || status=$?
fi
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  say "installing $TOOL did not finish within $TIMEOUT_S s (TOOL_INSTALL_TIMEOUT_S): is the package index (PyPI or pip's index-url) reachable?"
  exit 1
elif [ "$status" != 0 ]; then
  say "installing $TOOL from $LOCK with $INSTALLER failed (exit $status): see above"
  exit 1
fi
touch "$tmp/.complete"
if ln -sT "$(basename "$tmp")" "$VENV" 2>/dev/null; then
  trap - EXIT
  say "$TOOL installed with $INSTALLER in $((SECONDS - started)) s"
else
  say "$TOOL: a concurrent install published $VENV first; using it"
fi
[ -f "$VENV/.complete" ] || { say "$VENV exists but is not a finished install: remove it"; exit 1; }
echo "$VENV/bin"
