"""Parse FinanceMath's markdown tables into typed cells.

Each FinanceMath record carries ``tables: list[str]``; each string is a markdown table, sometimes
with title or footnote lines around it and occasionally several tables in one string. Features and
checks downstream need the numbers, so this module turns the text into :class:`ParsedTable`
objects. It is pure logic: no I/O, and the public functions never raise on any input string, since
one odd record must not stop a pipeline run; problems are reported in ``ParsedTable.warnings``.

Work is linear in the input whatever it holds: one table string yields at most :data:`MAX_CELLS`
cells (padding of ragged rows included, the rest is cut with a warning) and each table keeps at
most :data:`MAX_WARNINGS` warnings plus a count. Serving, batch prediction and ingestion all
parse through here, so all of them get the same bound (a ragged table once cost gigabytes).
"""

import itertools
import math
import re

from pydantic import BaseModel

__all__ = [
    "MAX_CELLS",
    "MAX_WARNINGS",
    "Cell",
    "ParsedTable",
    "parse_markdown_table",
    "parse_number",
    "parse_tables",
]

MAX_CELLS = 2_000  # per table string; real FinanceMath tables have <= 133
MAX_WARNINGS = 20  # per table; real FinanceMath tables have <= 9


class Cell(BaseModel):
    """One table cell: its text and, when the cell is essentially a number, that number."""

    text: str
    value: float | None
    unit: str | None = None


class ParsedTable(BaseModel):
    """One markdown table split into header, typed body rows and the text lines around it."""

    header: list[str]
    rows: list[list[Cell]]
    footnotes: list[str] = []
    warnings: list[str] = []
    raw: str

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def n_cols(self) -> int:
        """Width of the widest line (header or body): ragged rows may be wider than the header."""
        return max([len(self.header), *(len(row) for row in self.rows)])

    @property
    def numeric_values(self) -> list[float]:
        """Body-cell numbers in row-major order (header cells are labels and are not included)."""
        return [cell.value for row in self.rows for cell in row if cell.value is not None]


# --- numbers -----------------------------------------------------------------------------------

_MAX_NUMBER_CHARS = 64  # longer cells are prose; the cap also bounds regex work on odd input
_CURRENCY = r"US\$|HK\$|NZ\$|C\$|A\$|S\$|R\$|\$|€|£|¥|₹|" + (
    r"USD|EUR|GBP|CAD|AUD|JPY|CHF|CNY|RMB|HKD|SGD|INR|BRL|MXN|SEK|NOK|DKK|NZD|ZAR|KRW"
)
_SCALES = {"thousand": 1e3, "thousands": 1e3, "k": 1e3, "million": 1e6, "millions": 1e6}
_SCALES |= {"mn": 1e6, "mm": 1e6, "mln": 1e6, "m": 1e6, "billion": 1e9, "billions": 1e9}
_SCALES |= {"bn": 1e9, "b": 1e9, "trillion": 1e12, "trillions": 1e12, "tn": 1e12}
_UNITS = {"%": "%", "percent": "%", "pct": "%", "x": "x", "times": "x", "bp": "bp", "bps": "bp"}
_UNITS |= {"year": "years", "years": "years", "yr": "years", "yrs": "years"}
_UNITS |= {"month": "months", "months": "months", "day": "days", "days": "days"}
_UNITS |= {"unit": "units", "units": "units", "share": "shares", "shares": "shares"}
# Whitespace is collapsed to single spaces before matching, so " ?" suffices and no two
# unbounded whitespace runs sit next to each other (which would backtrack quadratically).
_NUMBER_RE = re.compile(
    rf"""
    (?P<sign1>[+-])?\ ?(?P<open1>\()?\ ?(?P<cur1>{_CURRENCY})?\ ?
    (?P<sign2>[+-])?\ ?(?P<open2>\()?\ ?
    (?P<num>(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d*)?|\.\d+)(?P<exp>e[+-]?\d+)?
    \ ?(?P<close1>\))?
    \ ?(?P<scale>{"|".join(sorted(_SCALES, key=len, reverse=True))})?
    \ ?(?P<cur2>{_CURRENCY})?
    \ ?(?P<unit>{"|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))})?
    \ ?(?P<close2>\))?
    """,
    re.IGNORECASE | re.VERBOSE,
)
_ESCAPE_RE = re.compile(r"\\(.)")
_DASHES = str.maketrans({"\u2212": "-", "\u2013": "-", "\ufe63": "-", "\uff0d": "-"})


def parse_number(text: str) -> tuple[float | None, str | None]:
    """Return ``(value, unit)`` when the number is essentially the whole cell, else ``(None, None)``.

    Rule: after dropping markdown escapes/emphasis (``\\$``, ``**4.6%**``, a trailing ``*``
    footnote mark) the cell must be, in order: an optional sign, an optional ``(``, an optional
    currency (``$``, ``€``, ``£``, ``C$``, ``USD``...), the number (``57,000``, ``.5``, ``1.2E+3``),
    an optional ``)``, an optional scale word (``thousand``/``k``, ``million``/``mn``/``m``,
    ``billion``/``bn``/``b``, ``trillion``/``tn``), an optional trailing currency and an optional
    unit (``%``/``percent``, ``x``/``times``, ``bp``/``bps``, ``years``, ``months``, ``days``,
    ``units``, ``shares``); a lone ``m`` is read as million, never as months.
    Anything else (``Declining balance, 20% per year``, ``RA=10%``, ``5.3/6.1``, ``2018(E)``) is
    prose or a label and gives ``(None, None)``. Parentheses mean an accounting negative; a sign
    together with parentheses is ambiguous and rejected. The unit is the currency if there is one,
    else the normalised unit word. Results are always finite (``nan``/``inf``/overflow rejected).
    """
    if not isinstance(text, str):
        return None, None
    cleaned = text.translate(_DASHES)
    if "\\" in cleaned:
        cleaned = _ESCAPE_RE.sub(r"\1", cleaned)
    cleaned = " ".join(cleaned.split()).strip("*_ ")
    if not cleaned or len(cleaned) > _MAX_NUMBER_CHARS:
        return None, None
    match = _NUMBER_RE.fullmatch(cleaned)
    if match is None:
        return None, None
    parts = match.groupdict()
    opens = (parts["open1"] is not None) + (parts["open2"] is not None)
    closes = (parts["close1"] is not None) + (parts["close2"] is not None)
    signs = [s for s in (parts["sign1"], parts["sign2"]) if s]
    if opens != closes or opens > 1 or len(signs) > 1 or (opens and signs):
        return None, None
    if parts["cur1"] and parts["cur2"]:
        return None, None
    try:
        value = float(parts["num"].replace(",", "") + (parts["exp"] or ""))
    except ValueError:
        return None, None
    if parts["scale"]:
        value *= _SCALES[parts["scale"].lower()]
    if opens or signs == ["-"]:
        value = -value
    if not math.isfinite(value):
        return None, None
    currency = parts["cur1"] or parts["cur2"]
    unit = _UNITS[parts["unit"].lower()] if parts["unit"] else None
    return value + 0.0, (currency.upper() if currency else unit)  # + 0.0 turns -0.0 into 0.0


# --- tables ------------------------------------------------------------------------------------

_PIPE_RE = re.compile(r"(?<!\\)\|")
_SEPARATOR_CELL_RE = re.compile(r":?-+:?")
_NOISE_LINE_RE = re.compile(r"```\w*|[-=*_ ]+")  # code fences and horizontal rules


def _split_cells(line: str) -> list[str]:
    """Split a pipe line into stripped cells; outer pipes are optional and ``\\|`` is literal."""
    body = line.strip()
    if body.startswith("|"):
        body = body[1:]
    if body.endswith("|") and not body.endswith("\\|"):
        body = body[:-1]
    return [cell.strip().replace("\\|", "|") for cell in _PIPE_RE.split(body)]


def _is_separator(cells: list[str]) -> bool:
    filled = [cell.replace(" ", "") for cell in cells if cell]
    return bool(filled) and all(_SEPARATOR_CELL_RE.fullmatch(cell) for cell in filled)


def _segments(text: str) -> list[tuple[list[str], list[str], list[str]]]:
    """Cut text into ``(table_lines, footnotes, raw_lines)``, one per run of pipe lines.

    A blank or text line ends a table. Text between two tables belongs to the preceding one
    (footnotes follow their table) and text before the first table belongs to the first. Text
    with no pipe line yields one segment with no table lines.
    """
    segments: list[tuple[list[str], list[str], list[str]]] = [([], [], [])]
    in_table = False
    for line in text.splitlines():
        stripped = line.strip()
        is_table_line = _PIPE_RE.search(stripped) is not None
        if is_table_line and not in_table and segments[-1][0]:
            segments.append(([], [], []))
        in_table = is_table_line
        table_lines, footnotes, raw_lines = segments[-1]
        raw_lines.append(line)
        if is_table_line:
            table_lines.append(stripped)
        elif stripped and not _NOISE_LINE_RE.fullmatch(stripped):
            footnotes.append(stripped)
    return segments


_EMPTY_CELL = Cell(text="", value=None)  # shared by every empty and padding cell (never mutated)


def _cell(text: str) -> Cell:
    if not text:
        return _EMPTY_CELL
    value, unit = parse_number(text)
    return Cell(text=text, value=value, unit=unit)


class _CellBudget:
    """Cells one table string may still yield; each row pays for its cells before they exist."""

    def __init__(self, cells: int) -> None:
        self.total = cells
        self.left = cells

    def take(self, cells: int) -> bool:
        if cells > self.left:
            self.left = 0
            return False
        self.left -= cells
        return True

    @property
    def spent(self) -> bool:
        return self.left == 0

    def note(self) -> str:
        return f"the parser's budget of {self.total} cells per table string is spent"


def _capped(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return [*warnings[:MAX_WARNINGS], f"... and {len(warnings) - MAX_WARNINGS} more warnings"]


def _build(
    table_lines: list[str], footnotes: list[str], raw: str, budget: _CellBudget
) -> ParsedTable:
    """Turn one run of pipe lines into a ParsedTable, recording every irregularity as a warning."""
    warnings: list[str] = []
    if not table_lines:
        warnings.append("no table rows found")
        return ParsedTable(header=[], rows=[], footnotes=footnotes, warnings=warnings, raw=raw)
    first = _split_cells(table_lines[0])
    if _is_separator(first):
        header, body_start = [""] * len(first), 1
        warnings.append("no header row: table starts with a separator row")
    elif len(table_lines) > 1 and _is_separator(_split_cells(table_lines[1])):
        header, body_start = first, 2
    else:
        header, body_start = first, 1
        warnings.append("no separator row; first row used as header")
    # Split lazily: once the budget is spent, the remaining lines are never touched.
    body = (_split_cells(line) for line in itertools.islice(table_lines, body_start, None))
    cut: list[str] = []  # shown after the capped warnings, so never hidden by the cap
    allowed = budget.left
    if not budget.take(len(header)):
        header, body = header[:allowed], iter(())
        cut.append(f"header cut to {len(header)} cells: {budget.note()}")
    rows: list[list[Cell]] = []
    for cells in body:
        if _is_separator(cells):  # a divider inside the table (e.g. assets | liabilities)
            warnings.append(f"separator row after body row {len(rows)} ignored")
            continue
        if not budget.take(max(len(cells), len(header))):  # padding costs cells too
            cut.append(f"table cut after {len(rows)} body rows: {budget.note()}")
            break
        if len(cells) != len(header):
            n = len(rows) + 1
            warnings.append(f"ragged row {n}: {len(cells)} cells, header has {len(header)}")
        cells = cells + [""] * (len(header) - len(cells))
        rows.append([_cell(text) for text in cells])
    if not rows:
        warnings.append("no body rows")
    elif not any(cell.value is not None for row in rows for cell in row):
        warnings.append("no numeric cells")
    return ParsedTable(
        header=header, rows=rows, footnotes=footnotes, warnings=_capped(warnings) + cut, raw=raw
    )


def _failed(text: object, error: Exception) -> ParsedTable:
    """Last-resort result so a parser bug degrades to a warning instead of killing a run."""
    raw = text if isinstance(text, str) else ""
    warning = f"internal error while parsing: {type(error).__name__}: {error}"
    return ParsedTable(header=[], rows=[], warnings=[warning], raw=raw)


def parse_markdown_table(text: str, max_cells: int = MAX_CELLS) -> ParsedTable:
    """Parse the first table in ``text``; ``raw`` is the whole input.

    Footnotes are the text lines before the first table and between it and the next one. If the
    text holds more tables, they are not parsed and a warning says so (use :func:`parse_tables`).
    Input without any pipe line gives an empty table with a warning; this never raises.
    """
    if not isinstance(text, str):
        return ParsedTable(header=[], rows=[], warnings=["input is not a string"], raw="")
    try:
        segments = _segments(text)
        table_lines, footnotes, _ = segments[0]
        parsed = _build(table_lines, footnotes, text, _CellBudget(max_cells))
        if len(segments) > 1:
            parsed.warnings.append(
                f"text holds {len(segments)} tables; only the first was parsed (see parse_tables)"
            )
        return parsed
    except Exception as error:  # documented never-raise contract
        return _failed(text, error)


def parse_tables(texts: list[str], max_cells: int = MAX_CELLS) -> list[ParsedTable]:
    """Parse every table of every string, splitting strings that hold several tables.

    A string yields one ParsedTable per run of pipe lines (``raw`` is that table's own slice of the
    string, footnotes attached as in :func:`parse_markdown_table`), or a single empty table with a
    warning when it holds none, so every input string is represented at least once. Each string
    has its own budget of ``max_cells`` cells; tables after the budget is spent are not parsed
    and the last parsed one says so.
    """
    if isinstance(texts, str):  # a lone string is one text, not a list of characters
        texts = [texts]
    parsed: list[ParsedTable] = []
    for text in texts or []:
        if not isinstance(text, str):
            parsed.append(parse_markdown_table(text))
            continue
        budget = _CellBudget(max_cells)
        try:
            for table_lines, footnotes, raw_lines in _segments(text):
                if budget.spent:
                    parsed[-1].warnings.append(f"later tables not parsed: {budget.note()}")
                    break
                parsed.append(_build(table_lines, footnotes, "\n".join(raw_lines), budget))
        except Exception as error:  # documented never-raise contract
            parsed.append(_failed(text, error))
    return parsed
