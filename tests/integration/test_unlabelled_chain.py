"""Issue 29, "Case and names": a file with `answer` instead of `ground_truth` is reported by
ingestion (labelled 0, the column named), and training on the table built from it exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from financemath_mlops.errors import StageError
from financemath_mlops.features.build import read_features
from financemath_mlops.flows.stages import features_stage, ingest_stage, train_stage
from financemath_mlops.synthetic.sample import generate_sample
from tests.conftest import pipeline_settings

pytestmark = pytest.mark.integration


def test_a_misnamed_label_column_is_reported_and_training_on_it_exits_2(
    isolated_env: Path, restore_mlflow_uris: None
) -> None:
    rows = generate_sample(rows=24, seed=3)
    for row in rows:
        row["answer"] = row.pop("ground_truth")
    source = isolated_env / "answers.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = pipeline_settings(
        isolated_env, ingestion={"source": "local", "path": source}, features={"executor": "local"}
    )
    summary = ingest_stage(settings)
    assert (summary.written, summary.labelled, summary.unknown_columns) == (24, 0, {"answer": 24})
    assert any("rename it to ground_truth" in note for note in summary.warnings())

    features_stage(settings)
    frame, _ = read_features(settings.features_output)
    assert len(frame) == 24 and frame["target"].isna().all()
    with pytest.raises(StageError, match="only 0 labelled rows in .*training needs at least 20"):
        train_stage(settings)
