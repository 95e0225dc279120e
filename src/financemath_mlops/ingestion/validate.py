"""Turn untrusted rows into validated records, and every failure into a reject with its reason.

Nothing is dropped silently: each input row ends up either in ``records`` or in ``rejects``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import ValidationError

from financemath_mlops.atomic import dump_jsonl
from financemath_mlops.ingestion.jsonl import ERROR, MAX_DEPTH, UNPARSEABLE
from financemath_mlops.names import closest
from financemath_mlops.records import (
    KNOWN_COLUMNS,
    SCORED_COLUMNS,
    TOPICS,
    FinanceMathRecord,
    IngestedRecord,
    RecordMeta,
)
from financemath_mlops.tables import parse_tables

log = logging.getLogger(__name__)

# "ingest": the whole record, as training will read it. "predict": only what a prediction reads
# (SCORED_COLUMNS), so a bad ground_truth or python_solution never rejects a row to be scored.
Mode = Literal["ingest", "predict"]


@dataclass
class Reject:
    row: int
    question_id: str | None
    reason: str
    errors: list[dict[str, Any]]
    original: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "question_id": self.question_id,
            "reason": self.reason,
            "errors": self.errors,
            "original": json_safe(self.original),
        }


@dataclass
class ValidationResult:
    records: list[IngestedRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    read: int = 0


def validate_rows(
    rows: list[Any], meta: dict[str, Any], ingested_at: str | None = None, mode: Mode = "ingest"
) -> ValidationResult:
    """Validate rows in order; the first occurrence of a question_id wins, later ones are rejected."""
    return RowValidator(meta, ingested_at, mode=mode).validate(rows)


class RowValidator:
    """Validates one input, whole or batch by batch, with the same result either way.

    Rows are numbered from the start of the input, and ``seen`` (question_id -> row of its first
    occurrence) spans every batch, so a duplicate is rejected whichever batch it lands in. In
    ``predict`` mode only :data:`SCORED_COLUMNS` are read: the other fields are neither checked
    nor kept (a reject still shows the whole original row).
    """

    def __init__(
        self, meta: dict[str, Any], ingested_at: str | None = None, *, mode: Mode = "ingest"
    ) -> None:
        stamp = ingested_at or datetime.now(UTC).isoformat(timespec="seconds")
        self.meta = RecordMeta(ingested_at=stamp, **meta)
        self.mode = mode
        self.seen: dict[str, int] = {}
        self.rows = 0

    def validate(self, rows: list[Any]) -> ValidationResult:
        result = ValidationResult(read=len(rows))
        for number, row in enumerate(rows, start=self.rows):
            record = self._record(number, row, result.rejects)
            if record is not None:
                result.records.append(record)
        self.rows += len(rows)
        return result

    def _record(self, number: int, row: Any, rejects: list[Reject]) -> IngestedRecord | None:
        qid = _question_id(row)
        try:
            if not isinstance(row, dict):
                raise TypeError(f"row is a {type(row).__name__}, not an object")
            if UNPARSEABLE in row:
                raise TypeError(f"line is {row.get(ERROR)}")
            used = row if self.mode == "ingest" else {k: row[k] for k in SCORED_COLUMNS if k in row}
            problem = row_problem(used)
            if problem:
                raise TypeError(problem)
            record = FinanceMathRecord.model_validate(used)
        except ValidationError as exc:
            errors = [_error_json(err) for err in exc.errors()]
            reason = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            rejects.append(Reject(number, qid, reason, errors, row))
            log.warning("rejected row %d (%s): %s", number, qid or "no id", reason)
            return None
        except TypeError as exc:
            rejects.append(Reject(number, qid, str(exc), [], row))
            log.warning("rejected row %d: %s", number, exc)
            return None
        first = self.seen.setdefault(record.question_id, number)
        if first != number:
            reason = f"duplicate question_id (first seen at row {first})"
            rejects.append(Reject(number, record.question_id, reason, [], row))
            log.warning("rejected row %d (%s): %s", number, record.question_id, reason)
            return None
        parsed = parse_tables(record.tables)
        return IngestedRecord(**record.model_dump(), parsed_tables=parsed, meta=self.meta)


def unknown_columns(rows: Iterable[Any]) -> dict[str, int]:
    """Columns of the input that no stage reads (``answer``, ``Ground_Truth``), with how many
    rows carry each. They are reported, not rejected: the row is valid without them."""
    counts: Counter[str] = Counter()
    for row in rows:
        if isinstance(row, dict) and UNPARSEABLE not in row:
            counts.update(str(key) for key in row if key not in KNOWN_COLUMNS)
    return dict(sorted(counts.items()))


def closest_topic(topic: str) -> str | None:
    return closest(topic, TOPICS)


def closest_column(column: str) -> str | None:
    return closest(column, KNOWN_COLUMNS)


def reason_counts(rejects: Iterable[Reject]) -> Counter[str]:
    """Reject reasons with how often each occurs (a duplicate's first row left out)."""
    return Counter(reject.reason.split(" (first seen at row")[0] for reject in rejects)


def reasons_in_brief(counts: Counter[str], limit: int = 3) -> str:
    """The commonest reasons for a one-line error: ``150 x ground_truth: Input should be ...``."""
    shown = [f"{n} x {reason[:120]}" for reason, n in counts.most_common(limit)]
    if len(counts) > limit:
        shown.append(f"and {len(counts) - limit} other reasons")
    return "; ".join(shown)


def rejects_path_for(output: Path) -> Path:
    """`financemath.jsonl` -> `financemath.rejects.jsonl`, beside it (whatever the output's type)."""
    return output.with_name(f"{output.stem}.rejects.jsonl")


def write_rejects(handle: IO[str], rejects: Iterable[Reject]) -> int:
    """Rejects as JSON lines (ingestion and batch prediction write the same format)."""
    return dump_jsonl(handle, (reject.to_json() for reject in rejects))


def row_problem(row: Any) -> str | None:
    """Why an untrusted value cannot be stored as UTF-8 JSON (too deep, lone surrogate), or None.

    Iterative, linear in the size of the value: safe on anything a parser produced.
    """
    stack: list[tuple[Any, int, str]] = [(row, 1, "row")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            return f"nested deeper than {MAX_DEPTH} levels"
        if isinstance(value, str):
            if not _is_utf8(value):
                return f"{where}: text is not valid Unicode (lone surrogate)"
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not _is_utf8(key):
                    return f"{where}: a key is not valid Unicode (lone surrogate)"
                stack.append((item, depth + 1, str(key)[:40] if depth == 1 else where))
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1, where) for item in value)
    return None


def json_safe(value: Any, depth: int = 0) -> Any:
    """JSON- and UTF-8-safe copy of an untrusted value: NaN/inf and lone surrogates become text,
    unknown types their repr, anything deeper than MAX_DEPTH a placeholder."""
    if depth > MAX_DEPTH:
        return f"<nested deeper than {MAX_DEPTH} levels>"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value if _is_utf8(value) else value.encode("utf-8", "backslashreplace").decode()
    if isinstance(value, int | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {json_safe(str(k), depth + 1): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist(), depth)
    return json_safe(repr(value), depth)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _question_id(row: Any) -> str | None:
    if isinstance(row, dict) and isinstance(row.get("question_id"), str):
        return row["question_id"]
    return None


def _error_json(err: Any) -> dict[str, Any]:
    field_name = ".".join(str(part) for part in err["loc"]) or "row"
    return {"field": field_name, "type": err["type"], "message": err["msg"]}
