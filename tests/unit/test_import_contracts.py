"""The declared floors (pyproject.toml, [tool.importlinter]) hold, checked by `lint-imports`.

The contracts are the house's map: which package may import which. The first test runs the real
tool over the real tree, so `make test` fails the moment an import goes upwards, a service module
reaches the training side or MLflow leaks out of `runs/` and `model/`. The second plants one such
import of each kind in a copy of the tree and checks the tool names every broken contract: a
contract that cannot fail would pass the first test for nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

from tests.helpers import REPO_ROOT, VENV_BIN

PACKAGE = "financemath_mlops"


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(VENV_BIN / "lint-imports"), "--config", "pyproject.toml", "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_declared_contract_is_kept() -> None:
    done = lint_imports(REPO_ROOT, REPO_ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout, done.stdout


def test_the_mlflow_contract_covers_every_package_but_its_two_homes() -> None:
    """A new top-level package or module is outside MLflow's homes until someone says otherwise."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c.get("forbidden_modules") == ["mlflow"]]
    root = REPO_ROOT / "src" / PACKAGE
    top = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    top |= {p.parent.name for p in root.glob("*/__init__.py")}
    assert set(contract["source_modules"]) == {f"{PACKAGE}.{n}" for n in top - {"runs", "model"}}


def test_an_upward_service_or_mlflow_import_breaks_its_contract(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        REPO_ROOT / "src" / PACKAGE,
        src / PACKAGE,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = {
        "tables.py": f"import {PACKAGE}.flows\n",  # the ground floor reaching the top
        "serving/probe.py": f"import {PACKAGE}.training\n",  # the service reaching training
        "predict/__init__.py": "import mlflow\n",  # MLflow outside its two homes
    }
    for rel, line in planted.items():
        path = src / PACKAGE / rel
        path.write_text(path.read_text(encoding="utf-8") + line, encoding="utf-8")

    done = lint_imports(tmp_path, src)

    assert done.returncode != 0, done.stdout
    assert "3 broken" in done.stdout, done.stdout
    assert f"{PACKAGE}.tables -> {PACKAGE}.flows" in done.stdout
    assert f"{PACKAGE}.serving.probe -> {PACKAGE}.training" in done.stdout
    assert f"{PACKAGE}.predict -> mlflow" in done.stdout
