"""Table aggregates, metadata features and the one record -> row function."""

from __future__ import annotations

import math

import numpy as np
import pytest

from financemath_mlops.features.rows import (
    EMBEDDING_DIM,
    FEATURE_COLUMNS,
    FEATURE_DOCS,
    N_HAND_FEATURES,
    feature_matrix,
    feature_row,
    metadata_features,
    question_numbers,
    table_aggregates,
    topic_column,
)
from financemath_mlops.records import RecordInput
from financemath_mlops.tables import parse_tables

TABLE = "| item | 2023 | 2024 |\n|---|---:|---:|\n| sales | $ 1,000 | $ 1,500 |\n| margin | 20% | (10) |"


def test_table_aggregates_on_a_hand_made_table() -> None:
    out = table_aggregates(parse_tables([TABLE]))
    values = np.array([1000.0, 1500.0, 20.0, -10.0])
    assert out["tbl_count"] == 1
    assert out["tbl_rows"] == 2
    assert out["tbl_cols"] == 3
    assert out["tbl_num_count"] == 4
    assert out["tbl_num_mean"] == pytest.approx(values.mean())
    assert out["tbl_num_std"] == pytest.approx(values.std())
    assert (out["tbl_num_min"], out["tbl_num_max"], out["tbl_num_sum"]) == (-10, 1500, 2510)
    assert out["tbl_pct_cells"] == pytest.approx(0.25)


def test_aggregates_span_several_tables() -> None:
    second = "| a | b |\n|---|---|\n| x | 5 |"
    out = table_aggregates(parse_tables([TABLE, second]))
    assert out["tbl_count"] == 2
    assert out["tbl_num_count"] == 5
    assert out["tbl_num_sum"] == 2515


def test_rows_without_tables_get_missing_values_not_zeros() -> None:
    out = table_aggregates([])
    assert out["tbl_count"] == 0
    for name in ("tbl_rows", "tbl_num_mean", "tbl_num_std", "tbl_num_sum", "tbl_num_min"):
        assert math.isnan(out[name]), name


def test_table_without_numbers_has_counts_but_missing_stats() -> None:
    out = table_aggregates(parse_tables(["| a | b |\n|---|---|\n| x | y |"]))
    assert out["tbl_num_count"] == 0
    assert math.isnan(out["tbl_num_mean"])


def test_question_numbers_handle_separators_signs_and_decimals() -> None:
    text = "Revenue grew from $1,250,000 to 1.5 million, a -3.5% change over 10 years (ref A2)."
    assert question_numbers(text) == [1250000.0, 1.5, -3.5, 10.0]


def test_metadata_features_markers_and_topic_one_hot() -> None:
    out = metadata_features("What is the 5% coupon on $1,000 over 3 years?", "Risk Management")
    assert out["q_has_percent"] == 1 and out["q_has_currency"] == 1 and out["q_has_years"] == 1
    assert out["q_num_count"] == 3
    assert out["q_num_abs_max"] == 1000
    assert out[topic_column("Risk Management")] == 1
    assert out[topic_column("Accounting")] == 0
    assert out["topic_other"] == 0
    plain = metadata_features("How many?", "Astrology")
    assert plain["topic_other"] == 1
    assert plain["q_has_percent"] == 0 and math.isnan(plain["q_num_abs_max"])


def test_every_feature_is_documented_once_in_a_fixed_order() -> None:
    assert len(FEATURE_COLUMNS) == len(set(FEATURE_COLUMNS)) == len(FEATURE_DOCS)
    assert FEATURE_COLUMNS[-EMBEDDING_DIM:] == tuple(f"emb_{i:03d}" for i in range(EMBEDDING_DIM))
    assert all(FEATURE_DOCS[name].strip() for name in FEATURE_COLUMNS)


def test_feature_row_equals_the_batch_row() -> None:
    records = [
        RecordInput("A 5% coupon bond?", (TABLE,), "Accounting"),
        RecordInput("No tables here, 7 years", (), None),
    ]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2, EMBEDDING_DIM))
    batch = feature_matrix(records, emb)
    assert batch.shape == (2, len(FEATURE_COLUMNS))
    np.testing.assert_array_equal(feature_row(records[1], emb[1]), batch[1])
    np.testing.assert_array_equal(batch[:, N_HAND_FEATURES:], emb)


def test_feature_matrix_reports_table_warnings_per_record() -> None:
    ragged = "| a | b | c |\n|---|---|---|\n| 1 | 2 |"
    warnings: list[list[str]] = []
    feature_matrix(
        [RecordInput("q", (ragged,)), RecordInput("q2")], np.zeros((2, EMBEDDING_DIM)), warnings
    )
    assert warnings[0] and "ragged" in warnings[0][0]
    assert warnings[1] == []


def test_wrong_embedding_shape_is_an_error() -> None:
    with pytest.raises(ValueError, match="expected embeddings of shape"):
        feature_matrix([RecordInput("q")], np.zeros((1, 10)))


# What the hand features compute for a few fixed records, per FEATURE_VERSION. A model records the
# version it was trained on; if these values change, a model trained before would be served
# features with another meaning under the same column names, and the column check cannot tell.
# Version 2 (issue 29): a topic that differs from FinanceMath's only in case or spacing ("risk
# MANAGEMENT") sets its own topic column; version 1 scored it as topic_other.
HAND_FEATURE_FINGERPRINTS = {1: "9da99088dccab5e1", 2: "d02f6b9611e0c139"}
FINGERPRINT_RECORDS = [
    RecordInput(
        "What is the 2024 margin if sales were $1,500 and costs 20%?", (TABLE,), "Accounting"
    ),
    RecordInput("Compute the NPV at 8% over 5 years.", (), "risk  MANAGEMENT"),
    RecordInput("How much?", ("| a |\n|---|\n| x |",), "Astrology"),
    RecordInput("No topic here: 3 or 4?", (), None),
]


def hand_feature_fingerprint() -> str:
    import hashlib
    import json

    from financemath_mlops.features.rows import hand_features

    rows = [
        {k: None if math.isnan(v) else round(v, 6) for k, v in hand_features(r)[0].items()}
        for r in FINGERPRINT_RECORDS
    ]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def test_changed_feature_values_come_with_a_new_feature_version() -> None:
    from financemath_mlops.features.rows import FEATURE_VERSION

    now = hand_feature_fingerprint()
    version = FEATURE_VERSION + (FEATURE_VERSION in HAND_FEATURE_FINGERPRINTS)
    assert now == HAND_FEATURE_FINGERPRINTS.get(FEATURE_VERSION), (
        "the hand features compute other values than FEATURE_VERSION "
        f"{FEATURE_VERSION} recorded: set FEATURE_VERSION = {version} in features/rows.py, "
        f"run scripts/gen_features_doc.py and add {version}: {now!r} here"
    )
