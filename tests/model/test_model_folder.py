"""A model folder is served without MLflow (issue 18: start to /ready within 2 s) and predicts
exactly what the MLflow pyfunc loaded from the same folder predicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from financemath_mlops.model.folder import load_folder
from financemath_mlops.records import RecordInput

RECORDS = [
    {"question": "What is the future value of $1,000 at 5% for 3 years?", "tables": [], "topic": "Corporate Finance"},
    {"question": "Compute the ratio.", "tables": ["| a | b |\n|---|---|\n| 1,200 | 3% |"], "topic": "Accounting"},
]  # fmt: skip


@pytest.fixture(scope="module")
def model_folder(trained_model) -> Path:
    folders = [p.parent for p in trained_model.workdir.rglob("MLmodel")]
    return next(f for f in sorted(folders) if (f / "artifacts" / "booster.txt").is_file())


def test_the_folder_predictor_is_the_pyfunc_predictor(model_folder: Path):
    import mlflow.pyfunc

    pyfunc = mlflow.pyfunc.load_model(str(model_folder))
    expected = pyfunc.unwrap_python_model().predictor
    loaded = load_folder(model_folder)
    assert loaded is not None and loaded.trained_at is not None
    assert loaded.predictor.config == expected.config
    records = [RecordInput.from_mapping(r) for r in RECORDS]
    np.testing.assert_array_equal(
        loaded.predictor.predict(records).values, expected.predict(records).values
    )


def test_folders_it_does_not_know_are_left_to_mlflow(model_folder: Path, tmp_path: Path):
    other = tmp_path / "other"
    shutil.copytree(model_folder, other)
    (other / "artifacts" / "booster.txt").unlink()
    assert load_folder(other) is None  # an artefact missing
    text = (model_folder / "MLmodel").read_text()
    (other / "MLmodel").write_text(text.replace("pyfunc_entry.py", "someone_elses.py"))
    assert load_folder(other) is None  # not our entry point
    assert load_folder(tmp_path / "nothing") is None


def test_serving_a_folder_imports_no_mlflow(model_folder: Path, tmp_path: Path):
    """Through the app: /ready, then a prediction, and MLflow never imported."""
    code = (
        "import json, sys, time\n"
        "import onnxruntime\n"
        "from fastapi.testclient import TestClient\n"
        "from financemath_mlops.serving.app import create_app\n"
        "built = []  # every ONNX session the start builds\n"
        "init = onnxruntime.InferenceSession.__init__\n"
        "def counted(self, *args, **kwargs):\n"
        "    built.append(id(self))\n"
        "    init(self, *args, **kwargs)\n"
        "onnxruntime.InferenceSession.__init__ = counted\n"
        "app = create_app()\n"
        "with TestClient(app) as client:\n"
        "    for _ in range(1200):\n"
        "        ready = client.get('/ready')\n"
        "        if ready.status_code == 200:\n"
        "            break\n"
        "        time.sleep(0.1)\n"
        f"    answer = client.post('/predict', json={RECORDS[0]!r})\n"
        "    model = app.state.service.holder.current\n"
        "    used = {id(p.embedder._session) for p in (model.predictor, model.concurrent_predictor)}\n"
        "print(json.dumps([ready.status_code, answer.status_code, 'mlflow' in sys.modules,\n"
        "                  sorted(built) == sorted(used)]))\n"
    )
    env = {"FMOPS_SERVING__MODEL_URI": str(model_folder), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # ... and no ONNX session built only to be replaced by the serving ones (start time).
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [200, 200, False, True]
