#!/usr/bin/env bash
# Install one hashed lock set into the venv, as the Makefile's stamps ask for it:
#   bash scripts/install.sh SET        SET: pipeline (make run) | dev (make test, test-*) |
#                                           serving | lint (the linters only, no project)
#   bash scripts/install.sh uv         only step 2 (`make lock` runs uv from there)
# Steps, each strict about what it takes:
#   1. the venv ($VENV, default .venv; python3 -m venv, so it has pip for the tools that call it);
#   2. uv in its own venv, from requirements/uv-tool.txt with every hash checked (as `make lock`
#      does), in a per-user tool cache keyed by that file's hash, made once, atomically;
#   3. torch first, for the sets that need it: the pinned CPU build ($TORCH_SPEC+cpu: a CUDA build
#      cannot match), --no-deps (its dependencies are in the lock, hashed), from where pip takes it;
#   4. the lock: --require-hashes --no-deps -r requirements/SET.txt: a file whose hash is not in
#      the lock is refused and nothing the lock does not name is fetched. Never `uv pip sync`: the
#      locks leave torch and the project out, and a venv with more (dev after pipeline) stays;
#   5. the project itself, editable, --no-deps; then `uv pip check`.
# uv reads no pip configuration: scripts/uv_pip.py passes pip's sources (find-links, index URLs,
# certificates, constraints, ...) to it explicitly. When uv cannot be bootstrapped (no wheel for
# this platform, no index), the same steps run with pip, saying so; INSTALLER=pip forces pip,
# INSTALLER=uv forbids the fallback.
# Extra sources for torch only: TORCH_INDEX, e.g. --extra-index-url=https://download.pytorch.org/whl/cpu
set -euo pipefail
cd "$(dirname "$0")/.."

SET=${1:?usage: scripts/install.sh pipeline|dev|serving|lint|uv}
case $SET in
  uv) ;;
  pipeline | dev) needs_torch=1 project=1 ;;
  serving) needs_torch=0 project=1 ;;
  lint) needs_torch=0 project=0 ;;
  *) echo "install.sh: unknown set '$SET': pipeline, dev, serving or lint (requirements/<set>.txt), or uv" >&2; exit 2 ;;
esac
VENV=${VENV:-.venv}
PY=$VENV/bin/python
LOCK=requirements/$SET.txt
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
TORCH_INDEX=${TORCH_INDEX:-}
INSTALLER=${INSTALLER:-auto}
case $INSTALLER in
  auto | uv | pip) ;;
  *) echo "install.sh: INSTALLER=$INSTALLER: auto (uv, else pip), uv or pip" >&2; exit 2 ;;
esac
UV_VENV=${UV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/financemath-mlops/uv-$(sha256sum requirements/uv-tool.txt | cut -c1-12)}

say() { echo "install.sh: $*" >&2; }

bootstrap_uv() {  # uv in its own venv, hash-checked; a concurrent clone's copy wins the rename
  [ -x "$UV_VENV/bin/uv" ] && return 0
  local tmp
  mkdir -p "$(dirname "$UV_VENV")" && tmp=$(mktemp -d "$UV_VENV.tmp.XXXXXX") || return 1
  if python3 -m venv "$tmp" \
    && "$tmp/bin/python" -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
      -r requirements/uv-tool.txt \
    && "$tmp/bin/uv" --version >/dev/null; then
    # the uv binary is self-contained, so the venv can move into place in one rename
    mv -T "$tmp" "$UV_VENV" 2>/dev/null || rm -rf "$tmp"
    [ -x "$UV_VENV/bin/uv" ]
  else
    rm -rf "$tmp"
    return 1
  fi
}

started=$SECONDS
if [ "$SET" = uv ]; then
  bootstrap_uv || { say "uv could not be installed from requirements/uv-tool.txt"; exit 1; }
  echo "$UV_VENV/bin/uv"
  exit 0
fi
test -x "$PY" || python3 -m venv "$VENV"

if [ "$INSTALLER" != pip ]; then
  if bootstrap_uv; then
    INSTALLER=uv
  elif [ "$INSTALLER" = uv ]; then
    say "uv could not be installed from requirements/uv-tool.txt (INSTALLER=uv: no fallback)"
    exit 1
  else
    say "uv could not be installed from requirements/uv-tool.txt: installing with pip instead (slower, same locks and hashes)"
    INSTALLER=pip
  fi
fi

if [ "$INSTALLER" = uv ]; then
  # uv_pip.py runs with the venv's python, whose pip reads the same pip.conf files and PIP_* variables
  uv_install() { "$PY" scripts/uv_pip.py "$UV_VENV/bin/uv" install --python "$PY" --quiet "$@"; }
  if [ "$needs_torch" = 1 ]; then
    # shellcheck disable=SC2086  # TORCH_INDEX is options to split
    uv_install --no-deps $TORCH_INDEX "$TORCH_SPEC+cpu"
  fi
  uv_install --require-hashes --no-deps -r "$LOCK"
  if [ "$project" = 1 ]; then
    uv_install --no-deps -e .
  fi
  "$UV_VENV/bin/uv" pip check --quiet --python "$PY"
else
  pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }
  pip_install --upgrade pip
  if [ "$needs_torch" = 1 ]; then
    # shellcheck disable=SC2086
    pip_install $TORCH_INDEX --no-deps "$TORCH_SPEC"
  fi
  pip_install --require-hashes --no-deps -r "$LOCK"
  if [ "$project" = 1 ]; then
    pip_install --no-deps -e .
  fi
  "$PY" -m pip check
fi
# uv leaves bytecode to the first import, which writes it once; pip compiles every module at
# install. Where PYTHONDONTWRITEBYTECODE is set, nothing ever writes it: every process compiles
# every module it imports, each time. That costs a single `make run` less (its pipeline 45 s
# instead of 38) than compiling the whole set would (36 s), but the test suite's hundreds of
# processes much more (489 s instead of about 350): so the dev set, which runs pytest, compiles
# the venv once, after everything is in (compileall skips files already compiled).
if [ "$INSTALLER" = uv ] && [ -n "${PYTHONDONTWRITEBYTECODE:-}" ] && [ "$SET" = dev ]; then
  say "PYTHONDONTWRITEBYTECODE is set: compiling the venv's bytecode once for the test suite's processes"
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  "$PY" -m compileall -qq -j 0 "$site" || say "some files in $site did not compile (they run from source)"
fi
say "$LOCK installed into $VENV with $INSTALLER in $((SECONDS - started)) s"
