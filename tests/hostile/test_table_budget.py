"""The table parser's work is linear in its input and capped by its own cell budget.

Defect 2 of issue 12: ragged rows were padded to the widest row, so a 6 KB table allocated a
gigabyte. Work is bounded here by counting what the parser builds (cells, warnings) and what it
allocates (tracemalloc), never by timing.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from financemath_mlops.tables import MAX_CELLS, MAX_WARNINGS, ParsedTable, parse_tables

BYTES_PER_CHAR = 64  # split lines and cell strings: a small multiple of the text
BYTES_PER_CELL = 2_500  # one pydantic Cell (or a tiny ParsedTable) with its text, generously


def cells_of(tables: list[ParsedTable]) -> int:
    return sum(len(t.header) + sum(len(row) for row in t.rows) for t in tables)


def parse_measured(text: str, max_cells: int) -> tuple[list[ParsedTable], int]:
    tracemalloc.start()
    try:
        tables = parse_tables([text], max_cells=max_cells)
        return tables, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def ragged_table(width: int, rows: int, row_cells: int) -> str:
    """The issue's shape: a wide header, then many short rows the old parser padded."""
    header = "|" + "a|" * width
    return "\n".join([header, "|---|", *(["|" + "x|" * row_cells] * rows)])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.integers(0, 400), st.integers(1, 5), st.integers(20, 300))
def test_ragged_tables_stay_within_the_cell_budget(width, rows, row_cells, budget):
    text = ragged_table(width, rows, row_cells)
    tables, peak = parse_measured(text, budget)
    assert cells_of(tables) <= budget
    assert peak <= BYTES_PER_CHAR * len(text) + BYTES_PER_CELL * budget + 65_536
    if width + rows * max(width, row_cells) > budget:
        assert any("budget" in w for t in tables for w in t.warnings)


PIECES = st.sampled_from(["|", "a", "1", "$", "-", ":", " ", "\n", "\\|", "---", "(2)", "%"])


@settings(max_examples=150, deadline=None)
@given(st.lists(PIECES, max_size=600).map("".join), st.integers(1, 200))
def test_any_text_is_parsed_in_linear_memory_within_budget(text, budget):
    tables, peak = parse_measured(text, budget)
    assert cells_of(tables) <= budget
    assert all(len(t.warnings) <= MAX_WARNINGS + 3 for t in tables)  # + count, cut, later tables
    assert peak <= BYTES_PER_CHAR * len(text) + BYTES_PER_CELL * budget + 65_536


def test_the_issue_shape_at_the_serving_limit_is_cut_not_padded():
    text = ragged_table(width=6_000, rows=6_000, row_cells=1)[:20_000]  # serving's table limit
    tables, peak = parse_measured(text, MAX_CELLS)
    assert cells_of(tables) <= MAX_CELLS
    assert peak <= BYTES_PER_CHAR * len(text) + BYTES_PER_CELL * MAX_CELLS  # old code: gigabytes
    assert any("budget" in w for w in tables[0].warnings)


def test_ragged_row_warnings_are_capped_with_a_count():
    text = ragged_table(width=3, rows=500, row_cells=1)
    (table,) = parse_tables([text])
    assert table.n_rows == 500  # 1,500 cells: within the budget, nothing cut
    assert len(table.warnings) == MAX_WARNINGS + 1
    # 500 ragged rows + "no numeric cells": the first MAX_WARNINGS, then one line with the rest
    assert table.warnings[-1] == f"... and {501 - MAX_WARNINGS} more warnings"


def test_many_tiny_tables_in_one_string_share_its_budget():
    tables = parse_tables(["|a|\n\n" * 5_000], max_cells=100)
    assert len(tables) == 100
    assert "later tables not parsed" in tables[-1].warnings[-1]
