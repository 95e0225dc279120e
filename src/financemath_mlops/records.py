"""The validated record types every stage shares.

`FinanceMathRecord` is the contract for one benchmark row as it arrives (from the hub, a file or the
synthetic generator). `IngestedRecord` is what ingestion writes: the same fields plus the parsed
tables and provenance metadata. `RecordInput` is what a model scores: question, tables, topic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from financemath_mlops.tables import ParsedTable

SCHEMA_VERSION = 1
REQUIRED_COLUMNS = ("question_id", "question", "topic")
KNOWN_COLUMNS = ("question_id", "question", "tables", "python_solution", "ground_truth", "topic")
LABEL_COLUMN = "ground_truth"  # the answer training learns; a row without it is unlabelled
# What a prediction reads: batch prediction validates these and nothing else.
SCORED_COLUMNS = ("question_id", "question", "tables", "topic")
# FinanceMath's seven topics: features one-hot them, the synthetic generator draws from them.
TOPICS: tuple[str, ...] = (
    "Accounting",
    "Asset Classes & Derivatives",
    "Corporate & Securities Issuance",
    "Market Analysis & Economics",
    "Portfolio Management & Strategy",
    "Quantitative Analysis & Valuation",
    "Risk Management",
)


def topic_key(text: str) -> str:
    """How topics are compared everywhere: case and runs of white space do not count."""
    return " ".join(text.split()).casefold()


_CANONICAL_TOPICS = {topic_key(t): t for t in TOPICS}


def canonical_topic(topic: str | None) -> str | None:
    """FinanceMath's own spelling of ``topic`` (``"accounting "`` -> ``"Accounting"``), or None
    when it is none of :data:`TOPICS`.

    The one topic rule: ingestion stores this spelling, the features one-hot it (anything else is
    ``topic_other``), and serving and batch prediction warn when it is None, so a topic that
    differs only in case means the same thing in every stage.
    """
    return _CANONICAL_TOPICS.get(topic_key(topic)) if isinstance(topic, str) else None


NonEmptyStr = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class FinanceMathRecord(BaseModel):
    """One FinanceMath row. Strict about types: a number where text belongs is an error, not text."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    question_id: NonEmptyStr
    question: NonEmptyStr
    tables: list[str] = Field(default_factory=list)
    # Kept as text for schema parity only: it is never executed anywhere in this project.
    python_solution: str = ""
    ground_truth: float | None = None
    topic: NonEmptyStr

    @field_validator("ground_truth")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("ground_truth must be a finite number or null")
        return value

    @field_validator("topic")
    @classmethod
    def _topic_spelling(cls, value: str) -> str:
        # A known topic in any case is stored as FinanceMath spells it; others are kept as given.
        return canonical_topic(value) or value

    @field_validator("tables", mode="before")
    @classmethod
    def _null_tables(cls, value: Any) -> Any:
        # Parquet and `datasets` give numpy arrays or None for list columns.
        if value is None:
            return []
        if not isinstance(value, list) and hasattr(value, "tolist"):
            return value.tolist()
        return value

    @field_validator("python_solution", mode="before")
    @classmethod
    def _null_solution(cls, value: Any) -> Any:
        return "" if value is None else value


class RecordMeta(BaseModel):
    """Provenance of an ingested record."""

    source: str
    dataset_id: str | None = None
    split: str | None = None
    revision: str | None = None
    ingested_at: str
    schema_version: int = SCHEMA_VERSION


class IngestedRecord(FinanceMathRecord):
    """A validated record with its parsed tables and where it came from (ingestion's output row)."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    parsed_tables: list[ParsedTable] = Field(default_factory=list)
    meta: RecordMeta


@dataclass(frozen=True)
class RecordInput:
    """What a feature row (and so a prediction) is built from: question, raw markdown tables, topic."""

    question: str
    tables: Sequence[str] = field(default_factory=tuple)
    topic: str | None = None

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> RecordInput:
        """The one way from a record-shaped mapping (a JSON row, a DataFrame row, ``dict(model)``).

        Missing, null or NaN tables (pandas fills empty cells with NaN) are no tables, a lone
        string is one table, an array is a tuple of text; a topic that is not text is no topic.
        """
        tables = row.get("tables")
        if tables is None or isinstance(tables, float):
            tables = ()
        elif isinstance(tables, str):
            tables = (tables,)
        topic = row.get("topic")
        return cls(
            question=str(row["question"]),
            tables=tuple(str(t) for t in tables),
            topic=topic if isinstance(topic, str) else None,
        )


def manifest_path_for(records_path: Path) -> Path:
    """`financemath.jsonl` -> `financemath.manifest.json`, beside it: where ingestion writes a
    records file's manifest and where features and training look for it (one name, one floor
    below all three)."""
    return records_path.with_name(f"{records_path.stem}.manifest.json")
