# financemath-mlops: the two commands a newcomer needs are `make run` and `make test`.
# Both create ./.venv and install what they need on first use, with uv, from the hashed locks.

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Each command installs the set it needs (scripts/install.sh: uv, from the hashed lock
# requirements/<set>.txt, after torch): `make run` the pipeline set, `make test` and every test-*
# target the dev set. One stamp per set; the sets nest with the same pins (serving < pipeline <
# dev, tests/unit/test_requirements_lock.py), so installing one stamps those inside it, and
# `make run` then `make test` adds only the difference.
INSTALLED = $(VENV)/.installed-$(1)
SETS_IN_serving := serving
SETS_IN_pipeline := serving pipeline
SETS_IN_dev := serving pipeline dev
SETS_IN_lint := lint
PIPELINE_SET := $(call INSTALLED,pipeline)
DEV_SET := $(call INSTALLED,dev)
# torch is installed first, pinned, as its CPU build (uv asks for $(TORCH_SPEC)+cpu), from where
# pip takes it (pip's find-links / index settings, passed to uv). Where pip has no CPU wheel:
# make TORCH_INDEX=--extra-index-url=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# uv, or pip to install without it (scripts/install.sh falls back to pip when uv cannot be had).
INSTALLER ?= auto
# `make install` installs the set EXTRAS names: dev (the default), pipeline or serving.
EXTRAS ?= dev
# uv in its own venv, a per-user tool cache keyed by the hash of its pins (made on first use).
UV_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/financemath-mlops/uv-$(shell sha256sum requirements/uv-tool.txt | cut -c1-12)
INSTALL := VENV=$(VENV) UV_VENV=$(UV_VENV) INSTALLER=$(INSTALLER) TORCH_SPEC="$(TORCH_SPEC)" \
	TORCH_INDEX="$(TORCH_INDEX)" bash scripts/install.sh

# Main job settings: `make run SOURCE=hf` or `make run SOURCE=local INPUT=path/to/validation.json`
SOURCE ?= sample
ROWS ?= 1000
INPUT ?=
RUN_ARGS ?=

.PHONY: run test test-images test-loop test-card test-team-stores test-faults test-browser lint unit install lock clean help tools

help:
	@echo "make run    - run the pipeline (SOURCE=sample|hf|local, INPUT=FILE, ROWS=N)"
	@echo "make test   - the whole check suite (ruff, linters, pytest) - what CI runs"
	@echo "make test-images - build the two images and run them (docker or podman, no registry needed)"
	@echo "make test-loop - drifted traffic -> alert delivered -> retraining started, end to end (minutes)"
	@echo "make test-card - the model card equals what the evaluation report computes from the real file (minutes)"
	@echo "make test-team-stores - MLflow on PostgreSQL + S3, two trainers at once, MLflow upgrade, DVC round trip (minutes)"
	@echo "make test-faults - the fault matrix against real servers: store, disk, process and service faults (docs/reliability.md; minutes)"
	@echo "make test-browser - /docs, /redoc, a drift report and the MLflow UI in headless Chromium, offline"
	@echo "make lock   - re-resolve the hashed locks requirements/*.txt from pyproject.toml (needs PyPI)"
	@echo "make clean  - remove generated data, mlruns, caches and reports (keeps .venv)"

# torch first (CPU build, --no-deps), then the lock with every file's hash checked and nothing
# outside it fetched (--require-hashes --no-deps, never `sync`), then the project: scripts/install.sh.
$(VENV)/.installed-%: pyproject.toml requirements/%.txt scripts/install.sh scripts/uv_pip.py
	$(INSTALL) $*
	touch $(addprefix $(VENV)/.installed-,$(SETS_IN_$*))

install: $(call INSTALLED,$(EXTRAS))

run: $(PIPELINE_SET)
	$(PY) -m financemath_mlops.flows --source $(SOURCE) $(if $(filter sample,$(SOURCE)),--rows $(ROWS)) $(if $(INPUT),--path $(INPUT)) $(RUN_ARGS)

# ruff, then the deployment files offline (hadolint, docker-compose config, check-jsonschema,
# promtool): scripts/check_offline.sh says how to install a missing tool; outside CI,
# SKIP_MISSING_TOOLS=1 skips the checks whose tool is missing.
# System tools the checks need (promtool, docker-compose, ...): installed with apt when root and
# missing, else named with the command that installs them (scripts/system_tools.sh).
tools:
	bash scripts/system_tools.sh test

lint: $(DEV_SET) tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	VENV_BIN=$(VENV)/bin bash scripts/check_offline.sh

test: lint
	$(VENV)/bin/pytest

# The operator's loop end to end (drifted traffic -> alert delivered -> retraining run created),
# with real Prefect, Prometheus and Alertmanager processes: minutes, so not part of `make test`.
test-loop: $(DEV_SET) tools
	$(VENV)/bin/pytest -m loop tests/integration/test_operator_loop.py -s

# Every page a user opens (/docs, /redoc, an Evidently report, the MLflow UI) in Debian's headless
# Chromium, checking that no request leaves the host: about a minute, so not in `make test`.
test-browser: $(DEV_SET)
	bash scripts/system_tools.sh browser
	$(VENV)/bin/pytest -m browser tests/browser -p no:cacheprovider

# The committed docs/model-card.md is what the evaluation report (repeated nested CV) computes
# from the real validation file beside the checkout (../shared/data/financemath/validation.json);
# skipped, saying so, when that file is absent. Regenerate the card: docs/model-card.md says how.
test-card: $(DEV_SET)
	FMOPS_TEST_CARD=1 $(VENV)/bin/pytest tests/model/test_model_card.py -q -p no:cacheprovider

# The team stores against real servers: MLflow on a throwaway PostgreSQL with S3 artefacts (moto),
# two trainers at once, a store of the previous MLflow minor version upgraded, a DVC round trip.
# Minutes, and DVC / the previous MLflow install into their own tool venvs on first use.
test-team-stores: $(DEV_SET) tools
	FMOPS_TEST_TEAM_STORES=1 $(VENV)/bin/pytest -p no:cacheprovider tests/integration/test_team_stores.py \
	  tests/integration/test_team_stores_dvc.py tests/integration/test_team_stores_upgrade.py

# The fault matrix (docs/reliability.md): each row injects a fault into real processes (PostgreSQL,
# `mlflow server`, moto's S3 behind our fault proxy, a tmpfs for ENOSPC, Dask, Prefect, the
# service) and checks what the user sees and what is kept. A skipped row fails here (STRICT).
# It prints the matrix and writes its JSON; scripts/gen_reliability_doc.py renders the doc from it.
test-faults: $(DEV_SET) tools
	FMOPS_TEST_FAULTS_STRICT=1 $(VENV)/bin/pytest -p no:cacheprovider -m faults tests/faults

# Build both images and run them as production would (docker, else podman configured by
# docker/podman/; air-gapped: a Python base from Debian packages). scripts/test_images.sh.
test-images: $(DEV_SET)
	VENV_BIN=$(VENV)/bin bash scripts/test_images.sh

# The hashed locks, one per install set, resolved by uv (requirements/uv-tool.txt) for CPython 3.11
# on x86_64 Linux, glibc 2.36 (Debian 12, the images' base), with the hash of every file PyPI has
# of each pinned version. dev first, the others constrained to it: the images run what `make test`
# tested. Locked versions stay; move one with LOCK_ARGS="--upgrade-package NAME==VERSION". torch's
# CPU wheel is resolved (for its dependencies) but left out: installers take it first, --no-deps.
# Needs PyPI, and torch's CPU wheel from pip's find-links or PyTorch's CPU index; installs do not.
TORCH_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),https://download.pytorch.org/whl/cpu/torch/)
LOCK_ARGS ?=
UV_COMPILE = $(UV_VENV)/bin/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_36 --custom-compile-command "make lock" \
	--find-links $(TORCH_FIND_LINKS) -c <(echo "$(TORCH_SPEC)+cpu") --no-emit-package torch $(LOCK_ARGS)

# The tool venvs' locks (scripts/tool_venv.sh), requirements/<tool>-tool.in -> <tool>-tool.txt,
# each resolved on its own (they cannot share the dev lock: the .in files say why) for the same
# platform, with the same hashes; no torch in them. The first word is the Python version: checkov's
# pinned soupsieve needs CPython >= 3.11.5.
UV_COMPILE_TOOL = $(UV_VENV)/bin/uv pip compile --quiet --generate-hashes \
	--python-platform x86_64-manylinux_2_36 --custom-compile-command "make lock" $(LOCK_ARGS) --python-version

lock:
	INSTALLER=uv UV_VENV=$(UV_VENV) bash scripts/install.sh uv
	$(UV_COMPILE) pyproject.toml --extra dev -o requirements/dev.txt
	$(UV_COMPILE) pyproject.toml --extra pipeline -c requirements/dev.txt -o requirements/pipeline.txt
	$(UV_COMPILE) pyproject.toml --extra serving -c requirements/dev.txt -o requirements/serving.txt
	$(UV_COMPILE) requirements/lint.in -c requirements/dev.txt -o requirements/lint.txt
	$(UV_COMPILE_TOOL) 3.11 requirements/dvc-tool.in -o requirements/dvc-tool.txt
	$(UV_COMPILE_TOOL) 3.11 requirements/mlflow-previous-tool.in -o requirements/mlflow-previous-tool.txt
	$(UV_COMPILE_TOOL) 3.11.5 requirements/checkov-tool.in -o requirements/checkov-tool.txt

clean:
	rm -rf data/interim data/processed data/predictions mlruns models reports .cache .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
