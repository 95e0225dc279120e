"""A model logged by the code as it was before issue 34's moves still loads and predicts today.

Every registered version stores a `pyfunc_entry.py` that imports `financemath_mlops.model.pyfunc`
(MLflow's models from code: no pickle, the stored file runs against the installed package). Issue
34 moved and renamed modules; this test logs a model with the pre-move source (`git archive` of
the commit before the first move, imported in place of today's package for the logging only: no
second interpreter, whose MLflow import alone costs 6-8 s here), then loads it with today's code
and asks it for the same predictions as the version the current code logged from the same files.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

from tests.conftest import TrainedModel
from tests.helpers import REPO_ROOT

# The last commit before issue 34 moved modules (5b9da40 moved the answer models out of model/).
BEFORE_MOVES = "8d0340a"
PACKAGE = "financemath_mlops"


class SavedBooster:
    """What log_pyfunc needs of a booster (`save_model`), without importing LightGBM: the
    current version's own booster.txt, byte for byte."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def save_model(self, filename: str) -> None:
        shutil.copyfile(self.path, filename)


@contextmanager
def package_from(src: Path) -> Iterator[ModuleType]:
    """`financemath_mlops` imported from `src` for the duration, then today's modules back."""
    ours = lambda name: name == PACKAGE or name.startswith(PACKAGE + ".")  # noqa: E731
    saved = {name: module for name, module in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(src))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(src))
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def old_source(tmp_path: Path) -> Path:
    archive = tmp_path / "before.tar"
    done = subprocess.run(
        ["git", "archive", "--format=tar", "-o", str(archive), BEFORE_MOVES, "src"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"needs the git history to {BEFORE_MOVES}: {done.stderr.strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "before", filter="data")
    src = tmp_path / "before" / "src"
    # The moved paths really are gone there or here: this is the pre-move tree.
    assert (src / "financemath_mlops" / "model" / "candidates.py").exists()
    assert not (REPO_ROOT / "src" / "financemath_mlops" / "model" / "candidates.py").exists()
    return src


def test_a_version_logged_before_the_moves_loads_and_predicts(
    trained_model: TrainedModel, tmp_path: Path, restore_mlflow_uris: None
) -> None:
    import mlflow

    from financemath_mlops import runs

    src = old_source(tmp_path)
    source = f"models:/{trained_model.model_name}/{trained_model.version}"
    mlflow.set_tracking_uri(trained_model.tracking_uri)
    mlflow.set_registry_uri(trained_model.tracking_uri)
    files = Path(mlflow.artifacts.download_artifacts(source, dst_path=str(tmp_path / "current")))
    flavor = yaml.safe_load((files / "MLmodel").read_text())["flavors"]["python_function"]
    art = {k: files / v["path"] for k, v in flavor["artifacts"].items()}
    config = json.loads(art["model_config"].read_text(encoding="utf-8"))
    manifest = {
        "feature_version": config["feature_version"],
        "columns": config["feature_columns"],
        "embedding": config["embedding"],
        "data": config.get("data", {}),
    }
    mlflow.set_experiment("logged-before-issue-34-moves")
    with package_from(src) as old_package:
        assert old_package.__file__.startswith(str(src)), old_package.__file__
        packaging = importlib.import_module(f"{PACKAGE}.model.packaging")
        assert packaging.__file__.startswith(str(src)), packaging.__file__
        with mlflow.start_run():
            old_uri = packaging.log_pyfunc(
                booster=SavedBooster(art["booster"]),
                manifest=manifest,
                target_transform=config["target_transform"],
                bundle=art["embedding"],
                work_dir=tmp_path / "model_files",
                example=[],
            ).model_uri
    stored = Path(mlflow.artifacts.download_artifacts(old_uri, dst_path=str(tmp_path / "old")))
    entry = (stored / "pyfunc_entry.py").read_text(encoding="utf-8")
    assert "from financemath_mlops.model.pyfunc import FinanceMathPyfunc" in entry

    records = [
        json.loads(line)
        for line in trained_model.ingested_path.read_text(encoding="utf-8").splitlines()[:8]
    ]
    old = runs.load_model(old_uri)
    assert old.predictor is not None  # our pyfunc, not MLflow's generic fallback
    loaded_by = sys.modules[f"{PACKAGE}.model.pyfunc"].__file__ or ""
    assert loaded_by.startswith(str(REPO_ROOT / "src")), loaded_by  # today's code loaded it
    np.testing.assert_allclose(old.values(records), runs.predict_records(source, records))
