"""The features stage on real files: output contract, embedding cache reuse, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from financemath_mlops.features.build import (
    COLUMNS_FILE,
    FeatureError,
    build_features,
    read_features,
)
from financemath_mlops.features.rows import FEATURE_COLUMNS
from financemath_mlops.ingestion import ingest
from tests.conftest import pipeline_settings
from tests.helpers import cli_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("features")
    settings = pipeline_settings(
        workdir, rows=80, seed=5, paths={"cache_dir": workdir / ".cache-emb"},
        features={"partition_rows": 30},
    )  # fmt: skip
    # Reuse the repo's exported ONNX bundle; keep the embedding cache private to this test.
    onnx_src = Path(__file__).resolve().parents[2] / ".cache" / "onnx"
    if onnx_src.is_dir():
        (workdir / ".cache-emb").mkdir()
        (workdir / ".cache-emb" / "onnx").symlink_to(onnx_src)
    ingest(settings)
    first = build_features(settings, show_progress=False)
    return settings, first


def test_output_has_ids_topic_target_and_fixed_feature_order(built) -> None:
    settings, summary = built
    frame, manifest = read_features(settings.features_output)
    assert list(frame.columns[:3]) == ["question_id", "topic", "target"]
    assert list(frame.columns[3:]) == list(FEATURE_COLUMNS)
    assert manifest["columns"] == list(FEATURE_COLUMNS)
    assert manifest["embedding"]["backend"] == "onnx"
    assert manifest["data"]["source"] == "sample"
    assert summary.rows == len(frame) == 80
    norms = np.linalg.norm(frame[[c for c in FEATURE_COLUMNS if c.startswith("emb_")]], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    no_tables = frame["tbl_count"] == 0
    assert no_tables.any() and frame.loc[no_tables, "tbl_num_mean"].isna().all()


def test_rerun_on_unchanged_input_reuses_cached_embeddings(built) -> None:
    settings, first = built
    assert first.cache_misses == 80
    before = pd.read_parquet(settings.features_output)
    second = build_features(settings, show_progress=False)
    assert (second.cache_hits, second.cache_misses) == (80, 0)
    pd.testing.assert_frame_equal(before, pd.read_parquet(settings.features_output))


def test_feature_table_not_matching_its_columns_file_is_refused(built, tmp_path: Path) -> None:
    settings, _ = built
    frame = pd.read_parquet(settings.features_output).drop(columns=["tbl_num_mean"])
    frame.to_parquet(tmp_path / "f.parquet")
    (tmp_path / COLUMNS_FILE).write_text(
        (settings.features_output.parent / COLUMNS_FILE).read_text()
    )
    with pytest.raises(FeatureError, match=r"does not match .*missing \['tbl_num_mean'\]"):
        read_features(tmp_path / "f.parquet")


@pytest.mark.parametrize("content", [None, ""])
def test_missing_or_empty_input_fails_clearly_and_writes_nothing(
    tmp_path: Path, content: str | None
) -> None:
    source = tmp_path / "in.jsonl"
    if content is not None:
        source.write_text(content)
    done = subprocess.run(
        [sys.executable, "-m", "financemath_mlops.features", "--input", str(source),
         "--output", str(tmp_path / "out.parquet")],
        env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert ("not found" if content is None else "is empty") in done.stderr
    assert not (tmp_path / "out.parquet").exists()


def test_input_that_is_not_ingested_records_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"foo": 1}) + "\n")
    settings = pipeline_settings(tmp_path, features={"input": source})
    with pytest.raises(FeatureError, match="not an ingested record"):
        build_features(settings, show_progress=False)
