"""Batch prediction with the registered model: local and Dask agree, and both equal the pyfunc."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from financemath_mlops import runs
from financemath_mlops.errors import StageError
from financemath_mlops.model.packaging import input_example
from financemath_mlops.predict.batch import BatchSummary, predict_file
from financemath_mlops.synthetic.sample import generate_sample
from tests.conftest import TrainedModel
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration

GOOD_ROWS = 150
BATCH_ROWS = 40
SEED = 2024
CHAMPION_URI = "models:/financemath-regressor-sample@champion"


def bad_rows(first: dict[str, Any]) -> list[Any]:
    return [
        {"question_id": "empty-question", "question": "  ", "topic": "Accounting"},
        {**first, "ground_truth": float("nan")},  # a duplicate id (ground_truth is not read)
        {"question_id": 7, "question": "Numbers are not ids?", "topic": "Accounting"},
    ]


@pytest.fixture(scope="module")
def input_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = generate_sample(rows=GOOD_ROWS, seed=SEED)
    lines = [json.dumps(r) for r in rows[:100]]
    lines += [json.dumps(r) for r in bad_rows(rows[0])]
    lines.append("{this line is not json")
    lines += [json.dumps(r) for r in rows[100:]]
    path = tmp_path_factory.mktemp("predict-input") / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Predicted:
    local: BatchSummary
    dask_output: Path
    dask_stdout: str


@pytest.fixture(scope="module")
def predicted(
    trained_model: TrainedModel, input_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Predicted:
    """The same file predicted in-process (local executor) and by the CLI on a Dask cluster."""
    out = tmp_path_factory.mktemp("predictions")
    settings = trained_model.settings.model_copy(deep=True)
    settings.predict.batch_rows = BATCH_ROWS
    local = predict_file(
        settings.predict, settings.mlflow, input_file, out / "local.parquet", CHAMPION_URI
    )
    dask_output = out / "dask.jsonl"
    cli = [sys.executable, "-m", "financemath_mlops.predict", "--input", str(input_file)]
    on_dask = ["--executor", "dask", "--dask-address", "local-cluster", "--workers", "2"]
    done = subprocess.run(
        [*cli, "--output", str(dask_output), *on_dask, "--batch-rows", str(BATCH_ROWS)],
        cwd=REPO_ROOT,
        env={**trained_model.env, "FMOPS_SERVING__MODEL_NAME": trained_model.model_name},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return Predicted(local, dask_output, done.stdout + done.stderr)


def test_local_and_dask_predictions_agree_and_equal_the_pyfunc(
    trained_model: TrainedModel, predicted: Predicted
) -> None:
    expected_ids = [r["question_id"] for r in generate_sample(rows=GOOD_ROWS, seed=SEED)]
    by_local = pd.read_parquet(predicted.local.output)
    by_dask = pd.read_json(predicted.dask_output, lines=True, dtype={"model_version": str})
    assert by_local["question_id"].tolist() == expected_ids
    assert by_dask["question_id"].tolist() == expected_ids
    np.testing.assert_allclose(by_dask["prediction"], by_local["prediction"], rtol=1e-6)
    assert set(by_local["model_name"]) == set(by_dask["model_name"]) == {trained_model.model_name}
    assert (
        set(by_local["model_version"]) == set(by_dask["model_version"]) == {trained_model.version}
    )
    assert by_local["warnings"].map(list).tolist() == by_dask["warnings"].tolist()

    # The very model, called through MLflow on the same records, gives the same numbers.
    runs.configure(trained_model.settings.mlflow)
    pyfunc = runs.load_pyfunc(CHAMPION_URI)
    records = generate_sample(rows=GOOD_ROWS, seed=SEED)
    reference = pyfunc.predict(input_example(records))["prediction"].to_numpy()
    np.testing.assert_allclose(by_local["prediction"], reference, rtol=1e-9)


def test_dask_run_reports_counts_and_loads_the_model_once_per_worker(
    predicted: Predicted,
) -> None:
    stdout = predicted.dask_stdout
    assert f"predict: read {GOOD_ROWS + 4} = predicted {GOOD_ROWS} + rejected 4" in stdout
    assert "(dask)" in stdout
    loads = [line for line in stdout.splitlines() if "(model loaded)" in line]
    workers = {line.split(" on ")[1].split()[0] for line in loads}
    assert len(loads) == len(workers) <= 2  # 4 partitions, one model load per worker


def test_bad_rows_are_rejected_with_their_reasons(predicted: Predicted) -> None:
    local = predicted.local
    assert (local.read, local.predicted, local.rejected) == (GOOD_ROWS + 4, GOOD_ROWS, 4)
    assert local.rejects_path.name == "local.rejects.jsonl"
    rejects = [json.loads(line) for line in local.rejects_path.read_text().splitlines()]
    assert [r["row"] for r in rejects] == [100, 101, 102, 103]
    assert rejects[0]["reason"].startswith("question:")
    assert rejects[1]["reason"] == "duplicate question_id (first seen at row 0)"
    assert rejects[2]["reason"].startswith("question_id:")
    assert "not valid JSON" in rejects[3]["reason"]
    dask_rejects = predicted.dask_output.with_name("dask.rejects.jsonl").read_text()
    assert [json.loads(line) for line in dask_rejects.splitlines()] == rejects


def test_parquet_and_json_inputs_give_the_same_predictions_as_jsonl(
    trained_model: TrainedModel, predicted: Predicted, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = generate_sample(rows=GOOD_ROWS, seed=SEED)[:30]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "questions.parquet")
    (tmp_path / "questions.json").write_text(json.dumps(rows))
    settings = trained_model.settings.model_copy(deep=True)
    settings.predict.batch_rows = 8  # several Parquet batches
    expected = pd.read_parquet(predicted.local.output).head(30)
    for name in ("questions.parquet", "questions.json"):
        summary = predict_file(
            settings.predict,
            settings.mlflow,
            tmp_path / name,
            tmp_path / f"{name}.out.parquet",
            CHAMPION_URI,
        )
        got = pd.read_parquet(summary.output)
        assert got["question_id"].tolist() == expected["question_id"].tolist(), name
        np.testing.assert_allclose(got["prediction"], expected["prediction"], rtol=1e-9)


def test_duplicate_ids_across_batches_are_rejected(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    rows = generate_sample(rows=6, seed=SEED)
    rows.append({**rows[1], "question": "The same id again?"})
    source = tmp_path / "dups.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = trained_model.settings.model_copy(deep=True)
    settings.predict.batch_rows = 4
    summary = predict_file(
        settings.predict, settings.mlflow, source, tmp_path / "out.jsonl", CHAMPION_URI
    )
    assert (summary.predicted, summary.rejected) == (6, 1)
    (reject,) = [json.loads(line) for line in summary.rejects_path.read_text().splitlines()]
    assert reject["row"] == 6
    assert reject["reason"] == "duplicate question_id (first seen at row 1)"


def test_unknown_model_and_missing_input_are_clear_errors(
    trained_model: TrainedModel, input_file: Path, tmp_path: Path
) -> None:
    with pytest.raises(StageError, match="cannot resolve model models:/no-such-model@champion"):
        predict_file(
            trained_model.settings.predict,
            trained_model.settings.mlflow,
            input_file,
            tmp_path / "out.jsonl",
            "models:/no-such-model@champion",
        )
    assert not list(tmp_path.iterdir())
    missing = tmp_path / "nope.jsonl"
    cli = [sys.executable, "-m", "financemath_mlops.predict", "--input", str(missing)]
    done = subprocess.run(
        [*cli, "--output", str(tmp_path / "out.parquet")],
        cwd=REPO_ROOT,
        env=trained_model.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: input file not found: {missing}; pass a FinanceMath .json, .jsonl or .parquet"
    )
    assert not list(tmp_path.iterdir())


def test_prediction_does_not_reject_rows_for_a_ground_truth_it_does_not_use(
    trained_model: TrainedModel, predicted: Predicted, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = generate_sample(rows=GOOD_ROWS, seed=SEED)[:6]
    odd = [{**r, "ground_truth": str(r["ground_truth"]), "python_solution": None} for r in rows]
    pq.write_table(pa.Table.from_pylist(odd), tmp_path / "answers-as-text.parquet")
    summary = predict_file(
        trained_model.settings.predict,
        trained_model.settings.mlflow,
        tmp_path / "answers-as-text.parquet",
        tmp_path / "out.parquet",
        CHAMPION_URI,
    )
    assert (summary.read, summary.predicted, summary.rejected) == (6, 6, 0)
    expected = pd.read_parquet(predicted.local.output).head(6)
    got = pd.read_parquet(summary.output)
    np.testing.assert_allclose(got["prediction"], expected["prediction"], rtol=1e-9)


def test_an_input_with_no_valid_row_exits_2_and_keeps_the_previous_predictions(
    trained_model: TrainedModel, tmp_path: Path
) -> None:
    output = tmp_path / "out.parquet"
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in generate_sample(rows=3, seed=SEED)))
    predict_file(
        trained_model.settings.predict, trained_model.settings.mlflow, good, output, CHAMPION_URI
    )
    before = {p.name: p.read_bytes() for p in (output, output.with_name("out.rejects.jsonl"))}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({**r, "question": 7}) + "\n" for r in generate_sample(4)))
    with pytest.raises(StageError) as refused:
        predict_file(
            trained_model.settings.predict, trained_model.settings.mlflow, bad, output, CHAMPION_URI
        )
    assert f"no valid row in {bad}: all 4 rows rejected (4 x question: " in str(refused.value)
    assert "out.rejects.jsonl are unchanged" in str(refused.value)
    after = {p.name: p.read_bytes() for p in (output, output.with_name("out.rejects.jsonl"))}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bad.jsonl", "good.jsonl", "out.parquet", "out.rejects.jsonl"
    ]  # fmt: skip
