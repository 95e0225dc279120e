"""Unit tests for the markdown-table parser, on hand-written tables shaped like FinanceMath's."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from financemath_mlops.tables import (
    Cell,
    ParsedTable,
    parse_markdown_table,
    parse_number,
    parse_tables,
)

ASSET_TABLE = """\
|              |     Machine*    |   Building**  |
|--------------|:---------------:|:-------------:|
| Purchase cost|     $ 42,000    |    $ 90,500   |
| Useful life  |     6 years     |               |
| Method       | Straight line, 10% per year |   |

\\* The machine was bought second hand.
\\** The building sits on leased land."""


# --- parse_number --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        # currency, before or after the number, spaced or not
        ("$ 57,000", 57000.0, "$"), ("$57,000", 57000.0, "$"),
        ("£ 26", 26.0, "£"), ("USD 17.6", 17.6, "USD"), ("100 EUR", 100.0, "EUR"),
        # percentages and basis points
        ("20%", 20.0, "%"), ("14 percent", 14.0, "%"), ("+20bps", 20.0, "bp"), ("55bp", 55.0, "bp"),
        # negatives: a sign, a minus sign or accounting brackets
        ("-10%", -10.0, "%"), ("(1,200)", -1200.0, None), ("($1,200)", -1200.0, "$"),
        ("$(10)", -10.0, "$"), ("-$10", -10.0, "$"), ("(5%)", -5.0, "%"),
        ("\u22125", -5.0, None), ("-0", 0.0, None),
        # durations, multiples and counts
        ("8 years", 8.0, "years"), ("1 year", 1.0, "years"), ("6 months", 6.0, "months"),
        ("1.5x", 1.5, "x"), ("0.89 times", 0.89, "x"), ("20,000 units", 20000.0, "units"),
        # scale words
        ("€ 1.2 million", 1.2e6, "€"), ("$3 billion", 3e9, "$"), ("$20million", 2e7, "$"),
        ("5 mn", 5e6, None), ("25 millions", 2.5e7, None),
        # markdown escapes, emphasis and footnote marks
        ("\\$1,000,000.00", 1e6, "$"), ("**4.6%**", 4.6, "%"), ("57,000*", 57000.0, None),
        # plain numbers in other spellings
        ("1.2E+3", 1200.0, None), ("+3.5", 3.5, None), ("2019", 2019.0, None),
        (".5", 0.5, None), ("  3.50  ", 3.5, None),
    ],
)  # fmt: skip
def test_parse_number_reads_value_and_unit(text: str, value: float, unit: str | None) -> None:
    got_value, got_unit = parse_number(text)
    assert got_value == pytest.approx(value)
    assert got_unit == unit


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "-",
        "\u2014",
        "n/a",
        "N/A",
        "Cash",
        "Declining balance, 20% per year",
        "RA=10%",
        "5.3/6.1",
        "1.2138-1.2259",
        "2018(E)",
        "<0.01",
        "45  48",
        "0, 5, 3",
        "1,2",
        "1234,567",
        "(-5)",
        "((5))",
        "(5",
        "$5 USD",
        "Year 1",
        "$4.8/kg",
    ],
)
def test_parse_number_rejects_text_that_is_not_just_a_number(text: str) -> None:
    assert parse_number(text) == (None, None)


@pytest.mark.parametrize(
    "text", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "1e308 billion"]
)
def test_parse_number_never_returns_nan_or_infinity(text: str) -> None:
    assert parse_number(text) == (None, None)


def test_parse_number_returns_none_for_non_string_input() -> None:
    assert parse_number(None) == (None, None)  # type: ignore[arg-type]


def test_parse_number_ignores_overlong_cells() -> None:
    assert parse_number("1" + "0" * 100) == (None, None)


# --- parse_markdown_table ------------------------------------------------------------------------


def test_parses_header_rows_and_footnotes_of_an_aligned_table() -> None:
    table = parse_markdown_table(ASSET_TABLE)

    assert table.header == ["", "Machine*", "Building**"]
    assert [row[0].text for row in table.rows] == ["Purchase cost", "Useful life", "Method"]
    assert [(c.value, c.unit) for c in table.rows[0][1:]] == [(42000.0, "$"), (90500.0, "$")]
    assert (table.rows[1][1].value, table.rows[1][1].unit) == (6.0, "years")
    assert table.rows[2][1].value is None  # a description, not a number
    assert table.footnotes == [
        "\\* The machine was bought second hand.",
        "\\** The building sits on leased land.",
    ]
    assert table.warnings == []
    assert table.raw == ASSET_TABLE


def test_reports_shape_and_numeric_values() -> None:
    table = parse_markdown_table(ASSET_TABLE)

    assert (table.n_rows, table.n_cols) == (3, 3)
    assert table.numeric_values == [42000.0, 90500.0, 6.0]


def test_handles_tables_without_outer_pipes() -> None:
    table = parse_markdown_table("Item | Rate\n--- | ---:\nTax | 30%\nBeta | 0.8")

    assert table.header == ["Item", "Rate"]
    assert table.numeric_values == [30.0, 0.8]
    assert table.warnings == []


def test_keeps_empty_cells_as_empty_text_without_value() -> None:
    table = parse_markdown_table("| | 2015 | 2016 |\n|---|---|---|\n| Sales | | 31 |")

    assert table.header == ["", "2015", "2016"]
    assert table.rows[0][1] == Cell(text="", value=None, unit=None)
    assert table.rows[0][2].value == 31.0


def test_pads_short_rows_and_warns() -> None:
    table = parse_markdown_table("| a | b | c |\n|---|---|---|\n| x | 1 |\n| y | 2 | 3 |")

    assert [len(row) for row in table.rows] == [3, 3]
    assert table.rows[0][2].text == ""
    assert table.warnings == ["ragged row 1: 2 cells, header has 3"]


def test_keeps_extra_cells_of_long_rows_and_warns() -> None:
    table = parse_markdown_table("| a | b |\n|---|---|\n| x | 1 | 2 | 3 |")

    assert [c.text for c in table.rows[0]] == ["x", "1", "2", "3"]
    assert table.n_cols == 4
    assert table.warnings == ["ragged row 1: 4 cells, header has 2"]


def test_uses_first_row_as_header_when_separator_is_missing() -> None:
    table = parse_markdown_table("| Year | Cash flow |\n| 1 | $100 |\n| 2 | $120 |")

    assert table.header == ["Year", "Cash flow"]
    assert table.n_rows == 2
    assert "no separator row; first row used as header" in table.warnings


def test_single_pipe_row_is_a_header_without_body() -> None:
    table = parse_markdown_table("| 10 | 20 | -8 |")

    assert table.header == ["10", "20", "-8"]
    assert table.rows == []
    assert "no body rows" in table.warnings


def test_table_starting_with_separator_gets_blank_header() -> None:
    table = parse_markdown_table("|---|---|\n| Beta | 1.1 |")

    assert table.header == ["", ""]
    assert table.numeric_values == [1.1]
    assert "no header row: table starts with a separator row" in table.warnings


def test_skips_divider_separator_inside_the_body() -> None:
    text = "| Item | A |\n|---|---|\n| Total assets | 100 |\n|---|---|\n| Debt | 40 |"
    table = parse_markdown_table(text)

    assert [row[0].text for row in table.rows] == ["Total assets", "Debt"]
    assert table.warnings == ["separator row after body row 1 ignored"]


def test_escaped_pipe_stays_inside_the_cell() -> None:
    table = parse_markdown_table("| Pair | Rate |\n|---|---|\n| EUR\\|USD | 1.1 |")

    assert table.rows[0][0].text == "EUR|USD"
    assert table.rows[0][1].value == 1.1


def test_warns_when_no_cell_holds_a_number() -> None:
    table = parse_markdown_table("| Time | Value |\n|---|---|\n| Time=0 | S0=80 |")

    assert table.numeric_values == []
    assert table.warnings == ["no numeric cells"]


def test_header_only_table_warns_no_body_rows() -> None:
    table = parse_markdown_table("| Exhibit 1. Prices |\n|---|")

    assert table.header == ["Exhibit 1. Prices"]
    assert table.warnings == ["no body rows"]


def test_text_before_the_table_is_kept_as_a_footnote() -> None:
    table = parse_markdown_table(
        "Additional Information:\n| Tax | 30% |\n|---|---|\n| Beta | 0.8 |"
    )

    assert table.footnotes == ["Additional Information:"]
    assert table.numeric_values == [0.8]


def test_drops_code_fences_and_rules_from_footnotes() -> None:
    table = parse_markdown_table("```markdown\n| a | b |\n|---|---|\n| x | 1 |\n```\n---\nNote: hi")

    assert table.footnotes == ["Note: hi"]


def test_handles_crlf_line_endings_and_blank_lines() -> None:
    table = parse_markdown_table("\r\n\r\n| a | b |\r\n|---|---|\r\n| x | 1 |\r\n\r\n")

    assert table.numeric_values == [1.0]
    assert table.warnings == []


@pytest.mark.parametrize("text", ["", "   \n\n ", "just some prose", "```\n```"])
def test_text_without_table_gives_empty_table_with_warning(text: str) -> None:
    table = parse_markdown_table(text)

    assert (table.header, table.rows) == ([], [])
    assert table.warnings == ["no table rows found"]
    assert table.raw == text


def test_garbage_input_does_not_raise() -> None:
    for text in ["|", "||||", "|\\|", ":|:", "|-|\n|-|", "\x00|\x00", "|" * 5000]:
        assert isinstance(parse_markdown_table(text), ParsedTable)


def test_non_string_input_gives_warning_instead_of_error() -> None:
    table = parse_markdown_table(None)  # type: ignore[arg-type]

    assert table.raw == ""
    assert table.warnings == ["input is not a string"]


def test_serialises_to_json_and_back() -> None:
    table = parse_markdown_table(ASSET_TABLE)

    data = json.loads(json.dumps(table.model_dump()))
    assert ParsedTable.model_validate(data) == table


# --- several tables per string -------------------------------------------------------------------

TWO_TABLES = """\
| Rate | Yield (%) |
| --- | --- |
| Short-term real rate | 2 |

Additional information

| Premium | (%) |
| --- | --- |
| Inflation premium | 0.8 |
Note: premiums are annual."""


def test_parse_markdown_table_parses_first_table_and_warns_about_the_rest() -> None:
    table = parse_markdown_table(TWO_TABLES)

    assert table.header == ["Rate", "Yield (%)"]
    assert table.numeric_values == [2.0]
    assert table.footnotes == ["Additional information"]
    assert table.warnings == ["text holds 2 tables; only the first was parsed (see parse_tables)"]
    assert table.raw == TWO_TABLES


def test_parse_tables_splits_a_string_holding_several_tables() -> None:
    first, second = parse_tables([TWO_TABLES])

    assert first.header == ["Rate", "Yield (%)"]
    assert first.footnotes == ["Additional information"]
    assert second.header == ["Premium", "(%)"]
    assert second.numeric_values == [0.8]
    assert second.footnotes == ["Note: premiums are annual."]
    assert first.warnings == second.warnings == []
    assert first.raw.startswith("| Rate") and second.raw.startswith("| Premium")


def test_parse_tables_keeps_one_entry_per_single_table_string() -> None:
    tables = parse_tables([ASSET_TABLE, "| a | b |\n|---|---|\n| x | 1 |"])

    assert [t.header[1] for t in tables] == ["Machine*", "b"]
    assert tables[0].raw == ASSET_TABLE


def test_parse_tables_represents_strings_without_tables() -> None:
    tables = parse_tables(["", "prose only"])

    assert [t.warnings for t in tables] == [["no table rows found"], ["no table rows found"]]


def test_parse_tables_of_empty_list_is_empty() -> None:
    assert parse_tables([]) == []


def test_parse_tables_treats_a_lone_string_as_one_text() -> None:
    assert len(parse_tables("| a |\n|---|\n| 1 |")) == 1  # type: ignore[arg-type]


# --- properties ----------------------------------------------------------------------------------

_PIECES = ["|", "| ", " |", "---", ":--:", "-", ":", "\\|", "\\", "\n", "\r\n", " ", "  ", "*"]
_PIECES += ["(", ")", "$", "€", "£", "%", "x", "1", "23", ",000", ".", "e", "E+9", "\u2212", "+"]
_PIECES += ["nan", "inf", "million", "bn", "bps", "years", "Note:", "a", "\u00a0", "\x00"]
pipe_heavy = st.lists(st.sampled_from(_PIECES) | st.text(max_size=3), max_size=60).map("".join)
any_text = st.text() | pipe_heavy


def _assert_well_formed(table: ParsedTable) -> None:
    assert isinstance(table.raw, str)
    assert not any(w.startswith("internal error") for w in table.warnings)
    assert all(len(row) >= len(table.header) for row in table.rows)
    for row in table.rows:
        for cell in row:
            assert cell.value is None or math.isfinite(cell.value)
    assert all(math.isfinite(v) for v in table.numeric_values)
    if not table.rows:
        assert table.warnings  # an empty result always says why


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_parse_number_never_raises_and_values_are_finite(text: str) -> None:
    value, unit = parse_number(text)
    assert value is None or math.isfinite(value)
    assert (value is None) <= (unit is None)  # no unit without a value


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_parse_markdown_table_never_raises(text: str) -> None:
    table = parse_markdown_table(text)

    _assert_well_formed(table)
    assert table.raw == text


@settings(max_examples=300, deadline=None)
@given(st.lists(any_text, max_size=4))
def test_parse_tables_never_raises_and_covers_every_string(texts: list[str]) -> None:
    tables = parse_tables(texts)

    assert len(tables) >= len(texts)
    for table in tables:
        _assert_well_formed(table)
