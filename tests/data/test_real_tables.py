"""Run the table parser over every real FinanceMath table, when the shared data is available.

The data lives outside the repository (``../shared/data/financemath``) and is never copied in;
without it these tests skip.
"""

import json
from functools import cache
from pathlib import Path

import pytest

from financemath_mlops.tables import ParsedTable, parse_markdown_table, parse_tables

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "financemath"
SPLITS = ["validation", "test"]

if not DATA_DIR.is_dir():
    pytest.skip(f"FinanceMath data not found at {DATA_DIR}", allow_module_level=True)


@cache
def _table_texts(split: str) -> tuple[str, ...]:
    path = DATA_DIR / f"{split}.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = json.loads(path.read_text(encoding="utf-8"))
    return tuple(text for record in records for text in record.get("tables") or [])


@pytest.mark.parametrize("split", SPLITS)
def test_every_real_table_parses_with_numbers_or_a_warning(split: str) -> None:
    texts = _table_texts(split)
    assert texts, f"{split} holds no tables"

    tables = parse_tables(list(texts))

    assert len(tables) >= len(texts)
    silent = [t.raw[:80] for t in tables if not t.numeric_values and not t.warnings]
    assert silent == [], "tables with neither a numeric cell nor a warning"
    errors = [w for t in tables for w in t.warnings if w.startswith("internal error")]
    assert errors == []


@pytest.mark.parametrize("split", SPLITS)
def test_every_real_table_string_parses_on_its_own(split: str) -> None:
    for text in _table_texts(split):
        table = parse_markdown_table(text)
        assert table.raw == text
        assert table.numeric_values or table.warnings


@pytest.mark.parametrize("split", SPLITS)
def test_most_real_tables_hold_numbers(split: str) -> None:
    tables = parse_tables(list(_table_texts(split)))

    with_numbers = sum(1 for table in tables if table.numeric_values)
    assert with_numbers / len(tables) > 0.9


def _truck_table() -> ParsedTable:
    for table in parse_tables(list(_table_texts("validation"))):
        if any("Truck*" in cell for cell in table.header):
            return table
    pytest.fail("truck/land table not found in the validation split")


def test_truck_table_reads_original_cost_as_numbers() -> None:
    table = _truck_table()

    row = next(row for row in table.rows if row[0].text == "Original cost")
    assert [(cell.value, cell.unit) for cell in row[1:]] == [(57000.0, "$"), (18000.0, "$")]


def test_truck_table_keeps_its_footnotes_and_descriptions() -> None:
    table = _truck_table()

    assert len(table.footnotes) == 2
    assert all(note.startswith("\\*") for note in table.footnotes)
    method = next(row for row in table.rows if row[0].text == "Depreciation method")
    assert method[1].value is None  # "Declining balance, 20% per year" is prose
    life = next(row for row in table.rows if row[0].text == "Estimated life")
    assert (life[1].value, life[1].unit) == (8.0, "years")
