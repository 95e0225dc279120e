"""The ingestion stage as one function: read, validate, parse tables, write atomically, summarise."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from financemath_mlops.atomic import write_jsonl
from financemath_mlops.config import Settings
from financemath_mlops.ingestion.sources import load_rows
from financemath_mlops.ingestion.validate import validate_rows

log = logging.getLogger(__name__)


@dataclass
class IngestionSummary:
    output: Path
    rejects_path: Path
    read: int
    written: int
    rejected: int
    source: str
    revision: str | None
    per_topic: dict[str, int] = field(default_factory=dict)
    table_warnings: int = 0

    def table(self) -> str:
        lines = [
            f"ingestion: read {self.read} = written {self.written} + rejected {self.rejected}",
            f"  output:  {self.output}",
            f"  rejects: {self.rejects_path}",
        ]
        if self.table_warnings:
            lines.append(f"  tables kept as text or with parse warnings: {self.table_warnings}")
        width = max((len(topic) for topic in self.per_topic), default=5)
        lines.append(f"  {'topic':<{width}}  rows")
        lines += [f"  {topic:<{width}}  {n:>4}" for topic, n in sorted(self.per_topic.items())]
        return "\n".join(lines)


def rejects_path_for(output: Path) -> Path:
    """`financemath.jsonl` -> `financemath.rejects.jsonl`, beside it."""
    return output.with_name(f"{output.stem}.rejects{output.suffix or '.jsonl'}")


def ingest(settings: Settings) -> IngestionSummary:
    """Run ingestion for the configured source. Raises SourceError (nothing written) on bad input."""
    rows, provenance = load_rows(settings)
    result = validate_rows(
        rows,
        meta={
            "source": provenance.source,
            "dataset_id": provenance.dataset_id,
            "split": provenance.split,
            "revision": provenance.revision,
        },
    )
    output = settings.ingestion_output
    rejects = rejects_path_for(output)
    written = write_jsonl(output, (r.model_dump(mode="json") for r in result.records))
    write_jsonl(rejects, (r.to_json() for r in result.rejects))
    summary = IngestionSummary(
        output=output,
        rejects_path=rejects,
        read=result.read,
        written=written,
        rejected=len(result.rejects),
        source=provenance.source,
        revision=provenance.revision,
        per_topic=dict(Counter(r.topic for r in result.records)),
        table_warnings=sum(1 for r in result.records for t in r.parsed_tables if t.warnings),
    )
    assert summary.read == summary.written + summary.rejected, "ingestion lost rows"
    log.info("wrote %d records to %s, %d rejects to %s", written, output, summary.rejected, rejects)
    return summary
