"""The ingestion stage as one function: read, validate, parse tables, write atomically, summarise.

Output, rejects and manifest are published together (:func:`atomic_set`): after a failure or a
kill the previous complete set stays in place, never a mix of two runs. An input in which no row
is valid is a failure too (exit 2): an empty output never replaces a good one.

The summary (and the manifest) say what a later stage would otherwise find out the hard way: how
many rows carry the label (``ground_truth``), which columns no stage reads (``answer`` instead of
``ground_truth``), and which topics are none of FinanceMath's seven (the features score them as
``topic_other``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from financemath_mlops.atomic import atomic_set, dump_jsonl
from financemath_mlops.config import Settings
from financemath_mlops.ingestion.sources import Provenance, SourceError, load_rows
from financemath_mlops.ingestion.validate import (
    closest_column,
    closest_topic,
    reason_counts,
    reasons_in_brief,
    rejects_path_for,
    unknown_columns,
    validate_rows,
    write_rejects,
)
from financemath_mlops.records import LABEL_COLUMN, canonical_topic

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
    labelled: int = 0
    unknown_topics: dict[str, int] = field(default_factory=dict)
    unknown_columns: dict[str, int] = field(default_factory=dict)

    def table(self) -> str:
        lines = [
            f"ingestion: read {self.read} = written {self.written} + rejected {self.rejected}",
            f"  labelled: {self.labelled} of {self.written} rows have {LABEL_COLUMN}",
            f"  output:  {self.output}",
            f"  rejects: {self.rejects_path}",
            f"  manifest: {self.manifest_path}",
        ]
        if self.table_warnings:
            lines.append(f"  tables kept as text or with parse warnings: {self.table_warnings}")
        lines += [f"  warning: {note}" for note in self.warnings()]
        width = max((len(topic) for topic in self.per_topic), default=5)
        lines.append(f"  {'topic':<{width}}  rows")
        lines += [
            f"  {topic:<{width}}  {n:>4}"
            + ("  (unknown: scored as topic_other)" if topic in self.unknown_topics else "")
            for topic, n in sorted(self.per_topic.items())
        ]
        return "\n".join(lines)

    def warnings(self) -> list[str]:
        """What the user should look at before training on this output (also logged)."""
        notes = []
        if self.unknown_columns:
            listed = _first(_column_note(c, n) for c, n in self.unknown_columns.items())
            notes.append(f"columns no stage reads (kept out of the output): {listed}")
        if self.written and not self.labelled:
            note = f"no row has {LABEL_COLUMN} (the label column): these rows can be scored, "
            note += "not trained on"
            if self.unknown_columns:
                names = ", ".join(repr(c) for c in self.unknown_columns)
                note += f"; if {names} holds the answers, rename it to {LABEL_COLUMN}"
            notes.append(note)
        if self.unknown_topics:
            by_rows = sorted(self.unknown_topics.items(), key=lambda item: (-item[1], item[0]))
            listed = _first(_topic_note(t, n) for t, n in by_rows)
            rows = sum(self.unknown_topics.values())
            notes.append(
                f"{_rows(rows)} {'has' if rows == 1 else 'have'} a topic that is none of "
                f"FinanceMath's 7 (features score them as topic_other): {listed}"
            )
        return notes


def _column_note(column: str, rows: int) -> str:
    hint = closest_column(column)
    return f"{column!r} ({_rows(rows)}" + (f"; did you mean {hint}?)" if hint else ")")


def _topic_note(topic: str, rows: int) -> str:
    hint = closest_topic(topic)
    return f"{topic[:60]!r} ({_rows(rows)}" + (f"; closest: {hint!r})" if hint else ")")


def _first(notes: Iterable[str], limit: int = 10) -> str:
    """At most ``limit`` notes on one line, then how many more (the manifest lists them all)."""
    notes = list(notes)
    more = f", and {len(notes) - limit} more (see the manifest)" if len(notes) > limit else ""
    return ", ".join(notes[:limit]) + more


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


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
    if not result.records:
        raise SourceError(
            f"no valid row in {provenance.dataset_id or provenance.source}: all {result.read} rows "
            f"rejected ({reasons_in_brief(reason_counts(result.rejects))}); nothing written, "
            f"{output} and its rejects and manifest are unchanged (docs/ingestion.md lists the "
            "columns and types a row needs)"
        )
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
            labelled=sum(1 for r in result.records if r.ground_truth is not None),
            unknown_topics=dict(
                Counter(r.topic for r in result.records if canonical_topic(r.topic) is None)
            ),
            unknown_columns=unknown_columns(rows),
        )
        assert summary.read == summary.written + summary.rejected, "ingestion lost rows"
        body = manifest_body(summary, provenance, paths[output], paths[rejects])
        paths[manifest].write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %d records to %s, %d rejects to %s", written, output, summary.rejected, rejects)
    for note in summary.warnings():
        log.warning("%s", note)
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
        "counts": {
            "read": summary.read,
            "written": summary.written,
            "rejected": summary.rejected,
            "labelled": summary.labelled,
        },
        "per_topic": dict(sorted(summary.per_topic.items())),
        "unknown_topics": dict(sorted(summary.unknown_topics.items())),
        "unknown_columns": summary.unknown_columns,
        "files": {
            summary.output.name: _file_facts(output, summary.written),
            summary.rejects_path.name: _file_facts(rejects, summary.rejected),
        },
    }


def _file_facts(path: Path, rows: int) -> dict[str, Any]:
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"rows": rows, "bytes": path.stat().st_size, "sha256": digest}
