"""The serving install is lean (issue 18) and serves the same answers as the full one.

Builds the `serving` extra from the lock into a temporary venv without pip, as the inference image
does (uv from requirements/uv-tool.txt, `--require-hashes --no-deps`, bytecode compiled), then checks: no forbidden distribution (torch, Prefect, Evidently, scikit-learn, matplotlib,
scipy, pyarrow, lightgbm, the full mlflow and its server parts), the venv within its budget, the
trained model predicting there like lightgbm does in the full install, and the prediction log it
writes read back by the monitoring reader of the full install. A venv build takes one to a few minutes
(PyPI or pip's cache), so `make test-images` runs this (FMOPS_TEST_SERVING_VENV=1), not `make test`.
Writes reports/images/serving-venv.json (sizes per distribution).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("FMOPS_TEST_SERVING_VENV") != "1",
    reason="builds a venv (minutes): run by `make test-images` (FMOPS_TEST_SERVING_VENV=1)",
)

REPO = Path(__file__).resolve().parents[2]
BUDGET_MB = 450
FORBIDDEN = {
    "torch", "sentence-transformers", "prefect", "evidently", "dask", "scikit-learn",
    "matplotlib", "scipy", "pyarrow", "lightgbm", "mlflow", "sqlalchemy", "alembic", "flask",
    "gunicorn", "graphene", "docker",
}  # fmt: skip
QUESTIONS = [
    {"question": "What is the future value of $1,000 at 5% for 3 years?", "tables": [], "topic": "Corporate Finance"},
    {"question": "Compute the ratio.", "tables": ["| a | b |\n|---|---|\n| 1,200 | 3% |"], "topic": "Accounting"},
    {"question": "How much is 15% of 2,000?", "tables": None, "topic": None},
]  # fmt: skip

LEAN_SCRIPT = """
import json, sys
import mlflow.pyfunc, pandas as pd
from financemath_mlops.monitoring.prediction_log import PredictionLog, prediction_entries
model = mlflow.pyfunc.load_model(sys.argv[1])
values = model.predict(pd.DataFrame(json.loads(sys.argv[2])))["prediction"].tolist()
with PredictionLog(sys.argv[3], features="hand") as log:
    log.record_many(prediction_entries("lean-1", {"name": "m", "version": "1"}, values,
                                       [["w"]] * len(values)))
loaded = sorted(m for m in ("lightgbm", "scipy", "pyarrow", "sklearn") if m in sys.modules)
print(json.dumps({"predictions": values, "loaded": loaded}))
"""


def run(*args: str | Path, timeout: float, **kwargs) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, f"{args[:3]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("lean")
    source = work / "source"  # a copy: building in the checkout would leave build/ behind
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    venv = work / "venv"
    # As the image: no pip or setuptools in the venv (16 + 9 MB); uv installs into it, from
    # outside, with this machine's pip sources (scripts/uv_pip.py), bytecode compiled.
    run(sys.executable, "-m", "venv", "--without-pip", venv, timeout=300)
    uv = run("bash", REPO / "scripts" / "install.sh", "uv", timeout=600).strip()
    install = [sys.executable, REPO / "scripts" / "uv_pip.py", uv, "install", "--quiet",
               "--python", venv / "bin" / "python"]  # fmt: skip
    env = {**os.environ, "UV_COMPILE_BYTECODE": "1", "UV_LINK_MODE": "copy"}
    lock = REPO / "requirements" / "serving.txt"  # the image's install, line for line
    run(*install, "--require-hashes", "--no-deps", "-r", lock, timeout=1200, env=env)
    run(*install, "--no-deps", source, timeout=600, env=env)
    return venv


def test_the_serving_venv_has_nothing_forbidden_and_fits_its_budget(lean_venv: Path):
    out = run(
        lean_venv / "bin" / "python", REPO / "scripts" / "venv_sizes.py", "--json", "-", timeout=300
    )
    report = json.loads(out)
    target = REPO / "reports" / "images" / "serving-venv.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({**report, "budget_mb": BUDGET_MB}, indent=2) + "\n")
    present = sorted(FORBIDDEN & set(report["distributions"]))
    assert not present, f"the serving install pulls in {present}"
    assert "mlflow-skinny" in report["distributions"] and "onnxruntime" in report["distributions"]
    size_mb = report["total_bytes"] / 1e6
    assert size_mb <= BUDGET_MB, f"serving venv {size_mb:.0f} MB > {BUDGET_MB} MB budget"


def test_the_lean_install_predicts_like_lightgbm_and_logs_what_monitoring_reads(
    lean_venv: Path, trained_model, tmp_path: Path
):
    import lightgbm as lgb
    import mlflow.pyfunc
    import pandas as pd

    from financemath_mlops.model.pyfunc import records_from_frame
    from financemath_mlops.model.target import inverse
    from financemath_mlops.monitoring.prediction_log import read_prediction_log

    folders = [p.parent for p in trained_model.workdir.rglob("MLmodel")]
    folder = next(f for f in sorted(folders) if (f / "artifacts" / "booster.txt").is_file())
    logs = tmp_path / "predictions"
    out = run(
        lean_venv / "bin" / "python", "-c", LEAN_SCRIPT, folder, json.dumps(QUESTIONS), logs,
        timeout=300, env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    lean = json.loads(out.strip().splitlines()[-1])
    assert lean["loaded"] == []

    predictor = mlflow.pyfunc.load_model(str(folder)).unwrap_python_model().predictor
    matrix, _, _ = predictor.features(records_from_frame(pd.DataFrame(QUESTIONS)))
    booster = lgb.Booster(model_file=str(folder / "artifacts" / "booster.txt"))
    expected = inverse(booster.predict(matrix), predictor.config["target_transform"])
    np.testing.assert_allclose(lean["predictions"], expected, rtol=1e-6)

    frame = read_prediction_log(logs)
    assert frame["request_id"].tolist() == ["lean-1"] * len(QUESTIONS)
    np.testing.assert_allclose(frame["prediction"], expected, rtol=1e-6)
    assert [list(w) for w in frame["warnings"]] == [["w"]] * len(QUESTIONS)
