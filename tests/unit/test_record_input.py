"""RecordInput.from_mapping: the one way every caller turns a record-shaped mapping into model input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from financemath_mlops.model.pyfunc import records_from_frame
from financemath_mlops.records import RecordInput


def test_a_json_row_keeps_question_tables_and_topic() -> None:
    row = {"question_id": "q1", "question": "What?", "tables": ["| a |"], "topic": "Accounting"}
    assert RecordInput.from_mapping(row) == RecordInput("What?", ("| a |",), "Accounting")


def test_missing_null_and_nan_tables_are_no_tables_and_odd_topics_no_topic() -> None:
    for tables in (None, math.nan):
        record = RecordInput.from_mapping({"question": "q", "tables": tables, "topic": 3})
        assert record == RecordInput("q", (), None)
    assert RecordInput.from_mapping({"question": "q"}) == RecordInput("q", (), None)


def test_a_lone_string_is_one_table_and_arrays_become_tuples_of_text() -> None:
    assert RecordInput.from_mapping({"question": "q", "tables": "| t |"}).tables == ("| t |",)
    array = np.array(["| x |", "| y |"], dtype=object)
    assert RecordInput.from_mapping({"question": "q", "tables": array}).tables == ("| x |", "| y |")


def test_dataframe_rows_go_through_the_same_function() -> None:
    frame = pd.DataFrame(
        [
            {"question": "a", "tables": ["| t |"], "topic": "Accounting"},
            {"question": "b", "tables": None, "topic": None},
        ]
    )
    assert records_from_frame(frame) == [
        RecordInput("a", ("| t |",), "Accounting"),
        RecordInput("b", (), None),
    ]
