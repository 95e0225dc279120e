"""The ingestion stage as one function: read, validate, parse tables, write atomically, summarise.

Output, rejects and manifest are published together (:func:`atomic_set`): after a failure or a
kill the previous complete set stays in place, never a mix of two runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from financemath_mlops.atomic import atomic_set, dump_jsonl
from financemath_mlops.config import Settings
from financemath_mlops.ingestion.sources import Provenance, SourceError, load_rows
from financemath_mlops.ingestion.validate import rejects_path_for, validate_rows, write_rejects

log = logging.getLogger(__name__)


@dataclass
class IngestionSummary:
    output: Path
    rejects_path: Path
    manifest_path: Path
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
            f"  manifest: {self.manifest_path}",
        ]
        if self.table_warnings:
            lines.append(f"  tables kept as text or with parse warnings: {self.table_warnings}")
        width = max((len(topic) for topic in self.per_topic), default=5)
        lines.append(f"  {'topic':<{width}}  rows")
        lines += [f"  {topic:<{width}}  {n:>4}" for topic, n in sorted(self.per_topic.items())]
        return "\n".join(lines)


def manifest_path_for(output: Path) -> Path:
    """`financemath.jsonl` -> `financemath.manifest.json`, beside it."""
    return output.with_name(f"{output.stem}.manifest.json")


def ingest(settings: Settings) -> IngestionSummary:
    """Run ingestion for the configured source. Raises SourceError (nothing written) on bad input."""
    rows, provenance = load_rows(settings)
    if not rows:
        raise SourceError(
            f"{provenance.dataset_id or provenance.source} holds no rows: nothing to ingest"
        )
    meta = {
        "source": provenance.source,
        "dataset_id": provenance.dataset_id,
        "split": provenance.split,
        "revision": provenance.revision,
    }
    result = validate_rows(rows, meta=meta)
    output = settings.ingestion_output
    rejects = rejects_path_for(output)
    manifest = manifest_path_for(output)
    with atomic_set([output, rejects, manifest]) as paths:
        with paths[output].open("w", encoding="utf-8") as handle:
            written = dump_jsonl(handle, (r.model_dump(mode="json") for r in result.records))
        with paths[rejects].open("w", encoding="utf-8") as handle:
            write_rejects(handle, result.rejects)
        summary = IngestionSummary(
            output=output,
            rejects_path=rejects,
            manifest_path=manifest,
            read=result.read,
            written=written,
            rejected=len(result.rejects),
            source=provenance.source,
            revision=provenance.revision,
            per_topic=dict(Counter(r.topic for r in result.records)),
            table_warnings=sum(1 for r in result.records for t in r.parsed_tables if t.warnings),
        )
        assert summary.read == summary.written + summary.rejected, "ingestion lost rows"
        body = manifest_body(summary, provenance, paths[output], paths[rejects])
        paths[manifest].write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %d records to %s, %d rejects to %s", written, output, summary.rejected, rejects)
    return summary


def manifest_body(
    summary: IngestionSummary, provenance: Provenance, output: Path, rejects: Path
) -> dict[str, Any]:
    """What a reader needs to trust the pair: counts, where the rows came from, checksums."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": {
            "source": provenance.source,
            "dataset_id": provenance.dataset_id,
            "split": provenance.split,
            "revision": provenance.revision,
        },
        "counts": {"read": summary.read, "written": summary.written, "rejected": summary.rejected},
        "per_topic": dict(sorted(summary.per_topic.items())),
        "files": {
            summary.output.name: _file_facts(output, summary.written),
            summary.rejects_path.name: _file_facts(rejects, summary.rejected),
        },
    }


def _file_facts(path: Path, rows: int) -> dict[str, Any]:
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"rows": rows, "bytes": path.stat().st_size, "sha256": digest}
