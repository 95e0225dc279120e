"""The real Prefect flow end to end, as the README's main command runs it (temporary server)."""

from __future__ import annotations

import json
import re
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml

from financemath_mlops.cli import run_main
from financemath_mlops.errors import StageError
from financemath_mlops.registry.__main__ import main as registry_main
from tests.helpers import REPO_ROOT, cli_env, run_ok, seeded_store

pytestmark = pytest.mark.integration

ROWS = 200
# A log record at WARNING or above as any handler in the run prints it: ours and MLflow's (time,
# level), Prefect's ("10:45:01.123 | WARNING | ..."), logging's last resort and uvicorn's
# ("WARNING:name:..." / "WARNING:  ...").
LOUD_RECORD = re.compile(
    r"^(?:(?:\d{4}[/-]\d\d[/-]\d\d[ T])?\d\d:\d\d:\d\d(?:[.,]\d{3})?(?: \|)? )?"
    r"(WARNING|ERROR|CRITICAL)\b *[:|]?",
    re.MULTILINE,
)
# What warnings.warn prints: "<file>:<line>: UserWarning: <message>".
WARNINGS_WARN = re.compile(r"^\S+:\d+: \w*Warning: .*$", re.MULTILINE)
WEIGHTS = "financemath_mlops.features.weights:"  # where the weights come from (the hub probe)
# The signature training logs (model/packaging.py): the contract every client of the model meets.
SIGNATURE = {
    "inputs": '[{"type": "string", "name": "question", "required": true}, {"type": "array", '
    '"items": {"type": "string"}, "name": "tables", "required": false}, {"type": "string", '
    '"name": "topic", "required": false}]',
    "outputs": '[{"type": "double", "name": "prediction", "required": true}]',
    "params": None,
}


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
    tmp_path: Path, restore_mlflow_uris: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    seeded_store(tmp_path / "mlruns" / "mlflow.db")  # MLflow's empty tables, copied
    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
    env.pop("PREFECT_API_URL", None)  # the temporary server, as on a first run
    command = [sys.executable, "-m", "financemath_mlops.flows", "--config", str(config)]
    done = run_ok([*command, "--source", "sample", "--rows", str(ROWS)], env=env, cwd=tmp_path,
                  timeout=400)  # fmt: skip
    out, err = done.stdout, done.stderr
    assert "pipeline finished in" in out
    # A quiet run: no record at WARNING or above (ours or a library's), no warnings.warn output,
    # and where the embedding weights come from told once (the features and training stages
    # both resolve them in this one process).
    assert not LOUD_RECORD.findall(err), err
    assert not WARNINGS_WARN.findall(err), err
    told = [line.split(WEIGHTS, 1)[1] for line in err.splitlines() if WEIGHTS in line]
    assert len(told) == len(set(told)) and any("embedding model" in line for line in told), told
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
    mlmodel = yaml.safe_load((served / "MLmodel").read_text())
    assert mlmodel["signature"] == SIGNATURE  # predict's type hints changed nothing of it
    assert (mlmodel["is_signature_from_type_hint"], mlmodel["type_hint_from_example"]) == (
        False,
        False,
    )
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
    # The flow's alias moves are in the audit trail, made by this flow run, with the evidence.
    with sqlite3.connect(tmp_path / "prefect" / "prefect.db") as db:
        ((flow_run_id,),) = db.execute("select id from flow_run").fetchall()
    history = ["--tracking-uri", uri, "--name", "financemath-regressor-sample", "history", "--json"]
    capsys.readouterr()
    assert run_main(registry_main, history) == 0
    entries = json.loads(capsys.readouterr().out)["entries"]
    assert [(e["alias"], e["to_version"], e["action"]) for e in entries] == [
        ("challenger", "1", "training"), ("champion", "1", "promotion"),
    ]  # fmt: skip
    for entry in entries:
        assert entry["actor"].startswith(f"prefect flow-run {flow_run_id} ("), entry
    assert entries[1]["reason"].startswith("promotion evidence: there is no champion yet")


@pytest.mark.parametrize(
    "line",
    [
        "10:45:01 WARNING financemath_mlops.x: ours",
        "2026/12/07 10:45:01 WARNING mlflow.store: MLflow's",
        "10:45:01.123 | WARNING | prefect.flow_runs - Prefect's",
        "10:45:01.123 | ERROR   | Task run 'x' - Prefect's task",
        "WARNING:root:logging's last resort",
        "ERROR:    uvicorn's",
    ],
)
def test_the_quiet_run_check_sees_every_log_format_in_the_flow(line: str) -> None:
    assert LOUD_RECORD.findall(f"before\n{line}\nafter")
    assert not LOUD_RECORD.findall(line.replace("WARNING", "INFO").replace("ERROR", "INFO"))


def test_a_lightgbm_typo_stops_the_flow_before_ingestion(tmp_path: Path) -> None:
    import subprocess

    env = cli_env(PREFECT_HOME=str(tmp_path / "prefect"))
    env["FMOPS_TRAINING__LIGHTGBM"] = '{"objectiv": "poisson"}'
    done = subprocess.run(
        [sys.executable, "-m", "financemath_mlops.flows", "--source", "sample", "--rows", "50"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "objectiv: not a LightGBM parameter (did you mean 'objective'?)" in done.stderr
    assert not (tmp_path / "data").exists()  # nothing ingested, no Prefect server started
    assert not (tmp_path / "prefect").exists()


@pytest.mark.parametrize(
    ("flags", "refusal"),
    [
        (["--source", "local", "--path", "x.json", "--rows", "10"],
         "--rows 10 does not apply to --source local"),
        (["--source", "sample", "--path", "x.json"], "--path x.json does not apply to --source sample"),
        (["--source", "sample", "--split", "test"], "--split test does not apply to --source sample"),
    ],
)  # fmt: skip
def test_a_flag_the_flows_source_would_ignore_is_refused(
    flags: list[str], refusal: str, isolated_env: Path
) -> None:
    from financemath_mlops.flows.__main__ import main

    config = isolated_env / "c.yaml"
    config.write_text("{}\n", encoding="utf-8")
    with pytest.raises(StageError, match=re.escape(refusal)):
        main(["--config", str(config), *flags])
    assert not (isolated_env / "data").exists()  # refused before any work
