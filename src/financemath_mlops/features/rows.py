"""The one record -> feature-row function, shared by the batch features stage and serving.

Training and serving both call :func:`feature_matrix`; nothing else builds feature rows, so the
two cannot drift apart. Every feature is named and described in :data:`FEATURE_DOCS` (the single
place that documents them; ``docs/features.md`` is generated from it).

Pure logic: the embedding vectors are computed by the caller (an :class:`Embedder`) and passed in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from financemath_mlops.records import TOPICS, RecordInput, canonical_topic
from financemath_mlops.tables import ParsedTable, parse_tables

# Raise by one whenever a column's meaning changes, even with the same names: 2 = a topic that
# differs from FinanceMath's only in case or spacing sets its own topic_* column, no longer
# topic_other (records.canonical_topic, issue 29).
FEATURE_VERSION = 2
EMBEDDING_DIM = 384


def topic_column(topic: str) -> str:
    return "topic_" + re.sub(r"[^a-z0-9]+", "_", topic.lower()).strip("_")


TABLE_FEATURES: dict[str, str] = {
    "tbl_count": "number of tables attached to the question (0 when none)",
    "tbl_rows": "body rows over all tables (missing when no tables)",
    "tbl_cols": "widest row over all tables (missing when no tables)",
    "tbl_num_count": "numeric body cells over all tables (missing when no tables)",
    "tbl_num_mean": "mean of numeric table cells (missing when none)",
    "tbl_num_std": "population std of numeric table cells (missing when none)",
    "tbl_num_min": "minimum numeric table cell (missing when none)",
    "tbl_num_max": "maximum numeric table cell (missing when none)",
    "tbl_num_sum": "sum of numeric table cells (missing when none)",
    "tbl_pct_cells": "share of numeric cells written as percentages (missing when none)",
    "tbl_warnings": "table parse warnings (ragged rows, text kept as is; missing when no tables)",
}
META_FEATURES: dict[str, str] = {
    "q_chars": "question length in characters",
    "q_words": "question length in words",
    "q_num_count": "numbers written in the question text",
    "q_num_abs_max": "largest absolute number in the question (missing when none)",
    "q_num_abs_min": "smallest absolute number in the question (missing when none)",
    "q_num_log_abs_mean": "mean of log10(1+|x|) over numbers in the question (missing when none)",
    "q_has_percent": "1 if the question contains a percent sign or the word percent",
    "q_has_currency": "1 if the question contains a currency sign or code ($, €, £, USD, ...)",
    "q_has_years": "1 if the question mentions years (maturities, horizons)",
    **{topic_column(t): f"1 if the topic is '{t}' (one-hot)" for t in TOPICS},
    "topic_other": "1 if the topic is none of FinanceMath's 7 topics",
}
EMBEDDING_FEATURES: dict[str, str] = {
    f"emb_{i:03d}": f"question embedding dimension {i} (all-MiniLM-L6-v2, L2-normalised)"
    for i in range(EMBEDDING_DIM)
}
FEATURE_DOCS: dict[str, str] = {**TABLE_FEATURES, **META_FEATURES, **EMBEDDING_FEATURES}
FEATURE_COLUMNS: tuple[str, ...] = tuple(FEATURE_DOCS)
N_HAND_FEATURES = len(TABLE_FEATURES) + len(META_FEATURES)

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])[-+]?\d+(?:\.\d+)?")
_PERCENT = re.compile(r"%|\bper ?cent\b", re.IGNORECASE)
_CURRENCY = re.compile(r"[$€£¥₹]|\b(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|dollars?|euros?)\b", re.I)
_YEARS = re.compile(r"\byears?\b|\bannual(?:ly)?\b", re.IGNORECASE)


def table_aggregates(tables: Sequence[ParsedTable]) -> dict[str, float]:
    """Numeric aggregates over parsed tables; NaN (missing), not zero, where there is nothing."""
    nan = math.nan
    out = dict.fromkeys(TABLE_FEATURES, nan)
    out["tbl_count"] = float(len(tables))
    if not tables:
        return out
    values = [v for t in tables for v in t.numeric_values]
    units = [c.unit for t in tables for row in t.rows for c in row if c.value is not None]
    out["tbl_rows"] = float(sum(t.n_rows for t in tables))
    out["tbl_cols"] = float(max(t.n_cols for t in tables))
    out["tbl_num_count"] = float(len(values))
    out["tbl_warnings"] = float(sum(len(t.warnings) for t in tables))
    if values:
        arr = np.asarray(values, dtype=np.float64)
        out["tbl_num_mean"] = float(arr.mean())
        out["tbl_num_std"] = float(arr.std())
        out["tbl_num_min"] = float(arr.min())
        out["tbl_num_max"] = float(arr.max())
        out["tbl_num_sum"] = float(arr.sum())
        out["tbl_pct_cells"] = sum(u == "%" for u in units) / len(values)
    return out


def question_numbers(question: str) -> list[float]:
    """Numbers written in the question text (thousands separators allowed)."""
    numbers = []
    for match in _NUMBER.finditer(question[:20_000]):
        try:
            value = float(match.group().replace(",", ""))
        except ValueError:
            continue
        if math.isfinite(value):
            numbers.append(value)
    return numbers


def metadata_features(question: str, topic: str | None) -> dict[str, float]:
    """Length, numbers and markers in the question, and the topic one-hot."""
    numbers = [abs(n) for n in question_numbers(question)]
    out: dict[str, float] = {
        "q_chars": float(len(question)),
        "q_words": float(len(question.split())),
        "q_num_count": float(len(numbers)),
        "q_num_abs_max": max(numbers) if numbers else math.nan,
        "q_num_abs_min": min(numbers) if numbers else math.nan,
        "q_num_log_abs_mean": (
            float(np.mean(np.log10(1.0 + np.asarray(numbers)))) if numbers else math.nan
        ),
        "q_has_percent": float(bool(_PERCENT.search(question))),
        "q_has_currency": float(bool(_CURRENCY.search(question))),
        "q_has_years": float(bool(_YEARS.search(question))),
    }
    canonical = canonical_topic(topic)  # the one topic rule: case and spacing do not count
    for known in TOPICS:
        out[topic_column(known)] = float(canonical == known)
    out["topic_other"] = float(canonical is None)
    return out


def hand_features(record: RecordInput) -> tuple[dict[str, float], list[str]]:
    """Table and metadata features of one record, plus table parse warnings for the caller."""
    parsed = parse_tables(list(record.tables))
    warnings = [f"table {i}: {w}" for i, t in enumerate(parsed) for w in t.warnings]
    return {
        **table_aggregates(parsed),
        **metadata_features(record.question, record.topic),
    }, warnings


def feature_row(record: RecordInput, embedding: np.ndarray) -> np.ndarray:
    """One record -> one float64 row in :data:`FEATURE_COLUMNS` order."""
    return feature_matrix([record], np.asarray(embedding).reshape(1, -1))[0]


def feature_matrix(
    records: Sequence[RecordInput], embeddings: np.ndarray, warnings: list[list[str]] | None = None
) -> np.ndarray:
    """Feature rows for many records (the batch form of :func:`feature_row`).

    ``embeddings`` are the question vectors in the same order. If ``warnings`` is a list, it
    receives one list of table-parse warnings per record.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.shape != (len(records), EMBEDDING_DIM):
        raise ValueError(
            f"expected embeddings of shape ({len(records)}, {EMBEDDING_DIM}), "
            f"got {embeddings.shape}"
        )
    out = np.empty((len(records), len(FEATURE_COLUMNS)), dtype=np.float64)
    for i, record in enumerate(records):
        hand, record_warnings = hand_features(record)
        out[i, :N_HAND_FEATURES] = [hand[name] for name in FEATURE_COLUMNS[:N_HAND_FEATURES]]
        if warnings is not None:
            warnings.append(record_warnings)
    out[:, N_HAND_FEATURES:] = embeddings
    return out
