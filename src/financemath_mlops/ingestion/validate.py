"""Turn untrusted rows into validated records, and every failure into a reject with its reason.

Nothing is dropped silently: each input row ends up either in ``records`` or in ``rejects``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from financemath_mlops.records import FinanceMathRecord, IngestedRecord, RecordMeta
from financemath_mlops.tables import parse_tables

log = logging.getLogger(__name__)


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
    rows: list[Any], meta: dict[str, Any], ingested_at: str | None = None
) -> ValidationResult:
    """Validate rows in order; the first occurrence of a question_id wins, later ones are rejected."""
    stamp = ingested_at or datetime.now(UTC).isoformat(timespec="seconds")
    record_meta = RecordMeta(ingested_at=stamp, **meta)
    result = ValidationResult(read=len(rows))
    first_seen: dict[str, int] = {}
    for number, row in enumerate(rows):
        qid = _question_id(row)
        try:
            if not isinstance(row, dict):
                raise TypeError(f"row is a {type(row).__name__}, not an object")
            if "__unparseable_line__" in row:
                raise TypeError(f"line is not valid JSON: {row.get('__error__')}")
            record = FinanceMathRecord.model_validate(row)
        except ValidationError as exc:
            errors = [_error_json(err) for err in exc.errors()]
            reason = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            result.rejects.append(Reject(number, qid, reason, errors, row))
            log.warning("rejected row %d (%s): %s", number, qid or "no id", reason)
            continue
        except TypeError as exc:
            result.rejects.append(Reject(number, qid, str(exc), [], row))
            log.warning("rejected row %d: %s", number, exc)
            continue
        if record.question_id in first_seen:
            reason = f"duplicate question_id (first seen at row {first_seen[record.question_id]})"
            result.rejects.append(Reject(number, record.question_id, reason, [], row))
            log.warning("rejected row %d (%s): %s", number, record.question_id, reason)
            continue
        first_seen[record.question_id] = number
        parsed = parse_tables(record.tables)
        result.records.append(
            IngestedRecord(**record.model_dump(), parsed_tables=parsed, meta=record_meta)
        )
    return result


def json_safe(value: Any) -> Any:
    """JSON-serialisable copy of an untrusted value (NaN/inf become strings, unknown types repr)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str | int | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    return repr(value)


def _question_id(row: Any) -> str | None:
    if isinstance(row, dict) and isinstance(row.get("question_id"), str):
        return row["question_id"]
    return None


def _error_json(err: Any) -> dict[str, Any]:
    field_name = ".".join(str(part) for part in err["loc"]) or "row"
    return {"field": field_name, "type": err["type"], "message": err["msg"]}
