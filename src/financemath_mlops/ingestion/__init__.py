"""Ingestion: raw FinanceMath rows in, validated JSONL (plus rejects with reasons) out."""

from financemath_mlops.ingestion.stage import IngestionSummary, ingest

__all__ = ["IngestionSummary", "ingest"]
