"""Training reads the records its feature table was built from (issue 22): the file the features
manifest names, the same file moved to features.input, or a refusal naming the files."""

from __future__ import annotations

from pathlib import Path

import pytest

from financemath_mlops.atomic import file_sha256
from financemath_mlops.errors import StageError
from financemath_mlops.training.train import records_behind


def test_the_named_records_win_over_features_input_and_a_moved_file_is_found(
    tmp_path: Path,
) -> None:
    named, elsewhere = tmp_path / "named.jsonl", tmp_path / "elsewhere.jsonl"
    named.write_text('{"question_id": "a"}\n')
    elsewhere.write_text('{"question_id": "b"}\n')
    manifest = {"data": {"input": str(named), "input_sha256": file_sha256(named)}}
    assert records_behind(elsewhere, tmp_path / "f.parquet", manifest) == named

    moved = tmp_path / "moved.jsonl"
    named.rename(moved)
    assert records_behind(moved, tmp_path / "f.parquet", manifest) == moved


def test_changed_records_are_refused_naming_the_files(tmp_path: Path) -> None:
    named, other = tmp_path / "named.jsonl", tmp_path / "other.jsonl"
    named.write_text('{"question_id": "a"}\n')
    manifest = {"data": {"input": str(named), "input_sha256": file_sha256(named)}}
    named.write_text('{"question_id": "a"}\n{"question_id": "c"}\n')
    other.write_text('{"question_id": "b"}\n')
    features = tmp_path / "f.parquet"
    with pytest.raises(StageError) as refused:
        records_behind(other, features, manifest)
    assert str(named) in str(refused.value) and str(features) in str(refused.value)


def test_a_manifest_from_before_the_checksum_uses_features_input(tmp_path: Path) -> None:
    configured = tmp_path / "configured.jsonl"
    table = tmp_path / "f.parquet"
    assert records_behind(configured, table, {"data": {"source": "sample"}}) == configured
