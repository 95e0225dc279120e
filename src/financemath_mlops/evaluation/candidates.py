"""Candidate answers built from the numbers of a question and its tables (pure, bounded).

A quarter of FinanceMath's answers are one arithmetic operation on two numbers that appear in the
question or its tables. This module lists those candidates for one record, with features that
describe each one (operation, where its operands come from, units, magnitude, question cues), so
that a ranker (:mod:`.ranker`) can pick one. Candidates are computed from the record's text only:
never from ``python_solution``, and nothing is executed.

Bounds (the work per record is linear in the input and capped whatever it holds):

* the question text is scanned up to :data:`MAX_QUESTION_CHARS` characters and at most
  :data:`MAX_SCANNED` numbers; tables go through :func:`financemath_mlops.tables.parse_tables`
  (capped at ``MAX_CELLS`` cells per table);
* at most :data:`MAX_OPERANDS` distinct numbers (question first, then tables, in order of
  appearance) become operands;
* so at most ``MAX_OPERANDS`` copies + ``MAX_OPERANDS * (MAX_OPERANDS - 1)`` ordered pairs, each
  giving at most ``len(PAIR_OPERATIONS)`` values: :data:`MAX_CANDIDATES` before de-duplication.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from financemath_mlops.tables import parse_tables

MAX_QUESTION_CHARS = 20_000  # the feature row reads the same prefix
MAX_SCANNED = 200  # numbers read from the question text before the operand cap applies
MAX_OPERANDS = 24  # real FinanceMath rows: median 7, 90 % under 24 numbers
# name -> (symbol for the description, ordered?)
OPERATIONS = (
    "copy",
    "add",
    "sub",
    "mul",
    "div",
    "div_pct",
    "change",
    "change_pct",
)
PAIR_OPERATIONS = OPERATIONS[1:]
MAX_CANDIDATES = MAX_OPERANDS + MAX_OPERANDS * (MAX_OPERANDS - 1) * len(PAIR_OPERATIONS)

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])[-+]?\d+(?:\.\d+)?")
_PERCENT_AFTER = re.compile(r"\s?(?:%|per ?cent)", re.IGNORECASE)
_YEAR_LIKE = (1900.0, 2100.0)
CUES: dict[str, re.Pattern[str]] = {
    "percent": re.compile(r"%|\bper ?cent|\bpercentage\b", re.I),
    "ratio": re.compile(r"\bratio\b|\bmultiple\b|\btimes\b", re.I),
    "change": re.compile(r"\bchange\b|\bincreas|\bdecreas|\bgrowth\b|\bgrow\b|\bdecline", re.I),
    "difference": re.compile(r"\bdifference\b|\bless\b|\bminus\b|\bnet\b|\bexcess\b", re.I),
    "total": re.compile(r"\btotal\b|\bsum\b|\bcombined\b|\baggregate\b", re.I),
    "per": re.compile(r"\bper share\b|\bper unit\b|\bper\b|\baverage\b", re.I),
    "return": re.compile(r"\breturn\b|\byield\b|\brate\b", re.I),
    "value": re.compile(r"\bvalue\b|\bprice\b|\bcost\b|\bamount\b", re.I),
    "million": re.compile(r"\bmillions?\b|\bthousands?\b|\bbillions?\b", re.I),
    "years": re.compile(r"\byears?\b|\bannual", re.I),
}
FEATURE_NAMES: tuple[str, ...] = (
    "op",
    "n_operands",
    "pos_a",
    "pos_b",
    "gap",
    "table_a",
    "table_b",
    "pct_a",
    "pct_b",
    "yearlike",
    "log_a",
    "log_b",
    "log_value",
    "negative",
    "below_one",
    "duplicates",
    "log_vs_operands",
    *(f"cue_{name}" for name in CUES),
)


@dataclass(frozen=True)
class Operand:
    value: float
    from_table: bool
    percent: bool
    position: int  # order of appearance among the operands


@dataclass
class Candidates:
    """One record's candidates: values, how each was built, and their feature matrix."""

    values: np.ndarray
    operations: list[str]
    operands: list[tuple[int, int]]  # operand indices (b = -1 for a copy)
    features: np.ndarray
    numbers: list[Operand]

    def describe(self, i: int) -> str:
        a, b = self.operands[i]
        x = _fmt(self.numbers[a].value)
        if b < 0:
            return x
        y = _fmt(self.numbers[b].value)
        return {
            "add": f"{x} + {y}",
            "sub": f"{x} - {y}",
            "mul": f"{x} * {y}",
            "div": f"{x} / {y}",
            "div_pct": f"{x} / {y} * 100",
            "change": f"{x} / {y} - 1",
            "change_pct": f"({x} / {y} - 1) * 100",
        }[self.operations[i]]


def _fmt(value: float) -> str:
    return f"{value:.10g}"


def record_operands(question: str, tables: Sequence[str]) -> list[Operand]:
    """Distinct finite numbers of the question (then its tables), at most MAX_OPERANDS."""
    found: list[tuple[float, bool, bool]] = []
    text = question[:MAX_QUESTION_CHARS]
    for match in itertools.islice(_NUMBER.finditer(text), MAX_SCANNED):
        try:
            value = float(match.group().replace(",", ""))
        except ValueError:
            continue
        percent = _PERCENT_AFTER.match(text, match.end()) is not None
        found.append((value, False, percent))
    for table in parse_tables(list(tables)):
        for row in table.rows:
            for cell in row:
                if cell.value is not None:
                    found.append((cell.value, True, cell.unit == "%"))
    operands: list[Operand] = []
    seen: set[float] = set()
    for value, from_table, percent in found:
        if not math.isfinite(value) or value in seen:
            continue
        seen.add(value)
        operands.append(Operand(value, from_table, percent, len(operands)))
        if len(operands) == MAX_OPERANDS:
            break
    return operands


def question_cues(question: str) -> list[float]:
    """Cue words of the question's last sentence (the one that asks), 0/1 each."""
    text = question[:MAX_QUESTION_CHARS]
    tail = text[-400:]
    return [float(bool(pattern.search(tail))) for pattern in CUES.values()]


def _pair_values(a: float, b: float) -> list[tuple[str, float]]:
    out = [("sub", a - b)]
    if a <= b:  # commutative operations once per unordered pair
        out += [("add", a + b), ("mul", a * b)]
    if b != 0:
        ratio = a / b
        out += [
            ("div", ratio),
            ("div_pct", ratio * 100),
            ("change", ratio - 1),
            ("change_pct", (ratio - 1) * 100),
        ]
    return out


def _log(value: float) -> float:
    return math.log10(abs(value)) if value != 0 else -12.0


def build_candidates(question: str, tables: Sequence[str]) -> Candidates:
    """Every candidate of one record (de-duplicated by value: the simplest construction is kept)."""
    operands = record_operands(question, tables)
    n = len(operands)
    cues = question_cues(question)
    raw: list[tuple[float, str, int, int]] = [(o.value, "copy", o.position, -1) for o in operands]
    for a, b in itertools.permutations(range(n), 2):
        for op, value in _pair_values(operands[a].value, operands[b].value):
            if math.isfinite(value):
                raw.append((value, op, a, b))
    counts: dict[float, int] = {}
    first: dict[float, int] = {}
    for i, (value, *_rest) in enumerate(raw):
        key = float(f"{value:.9g}")
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, i)
    keep = sorted(first.values())
    logs = [_log(o.value) for o in operands]
    mean_log = float(np.mean(logs)) if logs else 0.0
    rows = []
    values, operations, pairs = [], [], []
    for i in keep:
        value, op, a, b = raw[i]
        oa = operands[a]
        ob = operands[b] if b >= 0 else None
        log_value = _log(value)
        rows.append(
            [
                float(OPERATIONS.index(op)),
                float(n),
                oa.position / max(n, 1),
                (ob.position / max(n, 1)) if ob else -1.0,
                float(abs(a - b)) if ob else 0.0,
                float(oa.from_table),
                float(ob.from_table) if ob else -1.0,
                float(oa.percent),
                float(ob.percent) if ob else -1.0,
                float(_YEAR_LIKE[0] <= oa.value <= _YEAR_LIKE[1] or
                      (ob is not None and _YEAR_LIKE[0] <= ob.value <= _YEAR_LIKE[1])),
                logs[a],
                logs[b] if ob else 0.0,
                log_value,
                float(value < 0),
                float(abs(value) < 1),
                float(counts[float(f"{value:.9g}")]),
                log_value - mean_log,
                *cues,
            ]
        )  # fmt: skip
        values.append(value)
        operations.append(op)
        pairs.append((a, b))
    features = (
        np.asarray(rows, dtype=np.float64)
        if rows
        else np.empty((0, len(FEATURE_NAMES)), dtype=np.float64)
    )
    return Candidates(np.asarray(values, dtype=np.float64), operations, pairs, features, operands)
