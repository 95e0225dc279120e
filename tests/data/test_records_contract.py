"""Data tier: the datasets we ingest meet the record contract (real files when present)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from financemath_mlops.ingestion.validate import validate_rows
from financemath_mlops.synthetic.sample import generate_sample


def test_synthetic_sample_passes_validation_completely() -> None:
    result = validate_rows(generate_sample(rows=1000, seed=42), meta={"source": "sample"})
    assert (len(result.records), len(result.rejects)) == (1000, 0)


@pytest.mark.parametrize(
    ("name", "rows", "labelled"), [("validation", 200, True), ("test", 1000, False)]
)
def test_real_split_passes_validation_completely(
    shared_data: Path, name: str, rows: int, labelled: bool
) -> None:
    raw = json.loads((shared_data / f"{name}.json").read_text(encoding="utf-8"))
    result = validate_rows(raw, meta={"source": "local"})
    assert (len(result.records), len(result.rejects)) == (rows, 0)
    assert all((r.ground_truth is not None) == labelled for r in result.records)
    assert len({r.topic for r in result.records}) == 7
