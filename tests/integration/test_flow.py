"""The real Prefect flow end to end, as the README's main command runs it (temporary server)."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT, cli_env, run_ok

pytestmark = pytest.mark.integration

ROWS = 200


def write_config(workdir: Path) -> Path:
    """Absolute paths under workdir; the repo's .cache for the ONNX export and embeddings."""
    config = yaml.safe_load((REPO_ROOT / "configs" / "default.yaml").read_text())
    config["paths"] = {
        "raw_dir": str(workdir / "data" / "raw"),
        "interim_dir": str(workdir / "data" / "interim"),
        "processed_dir": str(workdir / "data" / "processed"),
        "predictions_dir": str(workdir / "data" / "predictions"),
        "reports_dir": str(workdir / "reports"),
        "cache_dir": str(REPO_ROOT / ".cache"),
        "hf_cache_dir": str(REPO_ROOT / ".cache" / "hf"),
        "serving_model_dir": str(workdir / "models" / "serving"),
    }
    config["mlflow"]["tracking_uri"] = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    config["mlflow"]["artifact_root"] = str(workdir / "mlruns" / "artifacts")
    config["training"]["cv_folds"] = 3
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_flow_runs_the_pipeline_end_to_end_and_promotes_a_sample_champion(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)  # the temporary server, as on a first run
    command = [sys.executable, "-m", "financemath_mlops.flows", "--config", str(config)]
    done = run_ok([*command, "--source", "sample", "--rows", str(ROWS)], env=env, cwd=tmp_path,
                  timeout=400)  # fmt: skip
    out = done.stdout
    assert "pipeline finished in" in out
    assert f"ingested:  {ROWS} rows ->" in out and "(0 rejected)" in out
    assert f"features:  {ROWS} rows -> {tmp_path / 'data' / 'processed'}" in out
    assert "model models:/financemath-regressor-sample/1" in out
    assert "promotion: there is no champion yet" in out
    # The model to serve is exported as a folder, and the printed command serves that folder.
    served = tmp_path / "models" / "serving"
    assert f"exported:  {served} <- the champion: financemath-regressor-sample version 1" in out
    assert re.search(rf"serve it:  \S*python\S* -m financemath_mlops.serving --model-uri {served}$",
                     out, re.MULTILINE)  # fmt: skip
    assert (served / "MLmodel").is_file()
    meta = yaml.safe_load((served / "registered_model_meta").read_text())
    assert meta == {"model_name": "financemath-regressor-sample", "model_version": "1"}
    # What Prefect recorded (its temporary server is gone; its database stays in PREFECT_HOME).
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        flow_runs = db.execute("select state_name from flow_run").fetchall()
        tasks = dict(db.execute("select name, state_name from task_run").fetchall())
        artifacts = db.execute("select key, data from artifact").fetchall()
    assert flow_runs == [("Completed",)]
    assert sorted(name.rsplit("-", 1)[0] for name in tasks) == [
        "build-features", "evaluate-holdout", "export-served-model", "ingest",
        "promote-if-better", "train-lightgbm",
    ]  # fmt: skip
    assert set(tasks.values()) == {"Completed"}
    ((key, data),) = artifacts
    run_id = re.search(r"run ([0-9a-f]{32})", out)[1]
    assert key == "financemath-run" and run_id in data

    metrics = json.loads((tmp_path / "data" / "processed" / "metrics.json").read_text())
    holdout_n = int(re.search(r"holdout:   n=(\d+)", out)[1])
    assert metrics["holdout"]["n"] == holdout_n and 0.1 * ROWS <= holdout_n <= 0.3 * ROWS
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    champion = MlflowClient(uri, uri).get_model_version_by_alias(
        "financemath-regressor-sample", "champion"
    )
    assert str(champion.version) == "1"
