"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real FinanceMath files beside the checkout; tests using them skip when absent."""
    if not (SHARED_DATA / "validation.json").is_file():
        pytest.skip(f"real FinanceMath files not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run in a temp working dir with no FMOPS_/MLflow/HF variables leaking in from the shell."""
    for name in list(os.environ):
        if name.startswith(("FMOPS_", "MLFLOW_")) or name in ("HF_TOKEN",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path
