"""FEATURE_VERSION is enforced at both ends (docs/features.md, "The feature version"): training
refuses a table built by another version, serving a model trained on one (issue 34).

A two-row table written here with the manifest the features stage would give it: no embedding
model, milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from financemath_mlops.features.build import (
    ID_COLUMN,
    MANIFEST_KEY,
    TARGET_COLUMN,
    TOPIC_COLUMN,
    FeatureError,
    read_features,
)
from financemath_mlops.features.rows import FEATURE_COLUMNS, FEATURE_VERSION


def table_of_version(path: Path, version: object) -> Path:
    frame = pd.DataFrame({ID_COLUMN: ["q1", "q2"], TOPIC_COLUMN: ["Accounting"] * 2,
                          TARGET_COLUMN: [1.0, 2.0]})  # fmt: skip
    features = pd.DataFrame(0.0, index=frame.index, columns=list(FEATURE_COLUMNS))
    table = pa.Table.from_pandas(pd.concat([frame, features], axis=1), preserve_index=False)
    manifest = {"columns": list(FEATURE_COLUMNS), "feature_version": version, "rows": 2}
    table = table.replace_schema_metadata(
        {**table.schema.metadata, MANIFEST_KEY.encode(): json.dumps(manifest).encode()}
    )
    pq.write_table(table, path)
    return path


def test_a_table_of_this_feature_version_is_read(tmp_path: Path) -> None:
    frame, manifest = read_features(table_of_version(tmp_path / "f.parquet", FEATURE_VERSION))
    assert len(frame) == 2 and manifest["feature_version"] == FEATURE_VERSION


@pytest.mark.parametrize("version", [FEATURE_VERSION - 1, None])
def test_a_table_of_another_feature_version_is_refused_naming_both(
    tmp_path: Path, version: object
) -> None:
    path = table_of_version(tmp_path / "f.parquet", version)
    with pytest.raises(FeatureError) as refused:
        read_features(path)
    message = str(refused.value)
    assert f"built by feature version {version}" in message
    assert f"this code builds version {FEATURE_VERSION}" in message
    assert "python -m financemath_mlops.features --output" in message
