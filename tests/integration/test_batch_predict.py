"""Batch prediction with the registered model: local and Dask agree, and both equal the pyfunc."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from financemath_mlops import tracking
from financemath_mlops.cli import StageError
from financemath_mlops.ingestion.synthetic import generate_sample
from financemath_mlops.model.packaging import input_example
from financemath_mlops.predict.batch import predict_file
from tests.conftest import TrainedModel
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration

GOOD_ROWS = 150
BATCH_ROWS = 40


def bad_rows(first: dict[str, Any]) -> list[Any]:
    return [
        {"question_id": "empty-question", "question": "  ", "topic": "Accounting"},
        {**first, "ground_truth": float("nan")},  # also a duplicate id: one reject, first reason
        {"question_id": 7, "question": "Numbers are not ids?", "topic": "Accounting"},
    ]


@pytest.fixture(scope="module")
def input_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = generate_sample(rows=GOOD_ROWS, seed=2024)
    lines = [json.dumps(r) for r in rows[:100]]
    lines += [json.dumps(r) for r in bad_rows(rows[0])]
    lines.append("{this line is not json")
    lines += [json.dumps(r) for r in rows[100:]]
    path = tmp_path_factory.mktemp("predict-input") / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_local_and_dask_predictions_agree_and_equal_the_pyfunc(
    trained_model: TrainedModel, input_file: Path, tmp_path: Path
) -> None:
    settings = trained_model.settings.model_copy(deep=True)
    settings.features.partition_rows = BATCH_ROWS
    uri = f"models:/{trained_model.model_name}@champion"
    local = predict_file(settings, input_file, tmp_path / "local.parquet", uri)
    settings.features.executor = "dask"
    settings.features.dask_workers = 2
    dask = predict_file(settings, input_file, tmp_path / "dask.jsonl", uri)

    expected_ids = [r["question_id"] for r in generate_sample(rows=GOOD_ROWS, seed=2024)]
    by_local = pd.read_parquet(local.output)
    by_dask = pd.read_json(dask.output, lines=True, dtype={"model_version": str})
    assert by_local["question_id"].tolist() == expected_ids
    assert by_dask["question_id"].tolist() == expected_ids
    np.testing.assert_allclose(by_dask["prediction"], by_local["prediction"], rtol=1e-6)
    assert set(by_local["model_name"]) == {trained_model.model_name}
    assert (
        set(by_local["model_version"]) == set(by_dask["model_version"]) == {trained_model.version}
    )
    assert by_local["warnings"].map(list).tolist() == by_dask["warnings"].tolist()
    # Each of the 2 workers loaded the model once for its 4 partitions.
    assert all(n == 1 for n in dask.extra["model_loads"].values())

    # The very model, called through MLflow on the same records, gives the same numbers.
    tracking.configure(settings)
    pyfunc = tracking.load_pyfunc(uri)
    records = generate_sample(rows=GOOD_ROWS, seed=2024)
    reference = pyfunc.predict(input_example(records))["prediction"].to_numpy()
    np.testing.assert_allclose(by_local["prediction"], reference, rtol=1e-9)

    for summary in (local, dask):
        assert (summary.read, summary.predicted, summary.rejected) == (GOOD_ROWS + 4, 150, 4)
    rejects = [json.loads(line) for line in local.rejects_path.read_text().splitlines()]
    assert [r["row"] for r in rejects] == [100, 101, 102, 103]
    reasons = " | ".join(r["reason"] for r in rejects)
    assert "question" in rejects[0]["reason"]
    assert "duplicate question_id (first seen at row 0)" in reasons or "ground_truth" in reasons
    assert "not valid JSON" in rejects[3]["reason"]
    assert local.rejects_path.name == "local.rejects.jsonl"


def test_unknown_model_and_missing_input_are_clear_errors(
    trained_model: TrainedModel, input_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(StageError, match="input file not found"):
        predict_file(trained_model.settings, tmp_path / "nope.jsonl", tmp_path / "out.jsonl")
    with pytest.raises(StageError, match="cannot resolve model models:/no-such-model@champion"):
        predict_file(
            trained_model.settings,
            input_file,
            tmp_path / "out.jsonl",
            "models:/no-such-model@champion",
        )
    assert not list(tmp_path.iterdir())


def test_cli_predicts_a_file_and_exits_2_on_an_unknown_model(
    trained_model: TrainedModel, input_file: Path, tmp_path: Path
) -> None:
    command = [sys.executable, "-m", "financemath_mlops.predict", "--input", str(input_file)]
    env = {**trained_model.env, "FMOPS_SERVING__MODEL_NAME": trained_model.model_name}
    output = tmp_path / "predictions.jsonl"
    done = subprocess.run(
        [*command, "--output", str(output)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"predict: read {GOOD_ROWS + 4} = predicted {GOOD_ROWS} + rejected 4" in done.stdout
    first = json.loads(output.read_text().splitlines()[0])
    assert set(first) == {"question_id", "prediction", "model_name", "model_version", "warnings"}

    failed = subprocess.run(
        [*command, "--output", str(tmp_path / "x.parquet"), "--model-uri", "models:/nope/1"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("error: cannot resolve model")
    assert not (tmp_path / "x.parquet").exists()
