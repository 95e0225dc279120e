"""The ingestion stage as one function: read, validate, parse tables, write atomically, summarise.

Output, rejects and manifest are published together (:func:`atomic_set`): after a failure or a
kill the previous complete set stays in place, never a mix of two runs. An input in which no row
is valid is a failure too (exit 2): an empty output never replaces a good one.

The summary (and the manifest) say what a later stage would otherwise find out the hard way: how
many rows carry the label (``ground_truth``), which columns no stage reads (``answer`` instead of
``ground_truth``), and which topics are none of FinanceMath's seven (the features score them as
``topic_other``).

Both stay small whatever the input holds (a file with thousands of made-up columns or topics is
still ingested, and reported in a few lines): a column name or topic is shown cut to
``NAME_CHARS`` characters; a warning lists at most ``LISTED`` names, then how many more; the
summary's topic table has one line per FinanceMath topic, at most ``LISTED`` unknown ones, and one
``(N unknown topics: M rows)`` line for the rest; each name -> rows map in the manifest keeps the
``MANIFEST_KEPT`` names with the most rows and puts the rest in ``<map>_more`` (``names`` and
``rows``), so the kept rows plus ``rows`` still add up to the total. The summary is then at most a
few KB and the manifest under 32 KB.
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
from financemath_mlops.config import IngestionSettings
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
from financemath_mlops.records import LABEL_COLUMN, canonical_topic, manifest_path_for

log = logging.getLogger(__name__)

NAME_CHARS = 60  # a column name or topic longer than this is shown cut, ending in "..."
LISTED = 10  # names a warning or the topic table lists before "and N more"
MANIFEST_KEPT = 100  # names each map of the manifest keeps (most rows first)
LABEL_GUESSES = 3  # unread columns the no-label warning names when none is close to the label


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
        known = {t: n for t, n in self.per_topic.items() if t not in self.unknown_topics}
        unknown = _commonest(self.unknown_topics)
        shown = sorted([*known.items(), *unknown[:LISTED]])
        width = max((len(_cut(topic)) for topic, _ in shown), default=5)
        lines.append(f"  {'topic':<{width}}  rows")
        lines += [
            f"  {_cut(topic):<{width}}  {n:>4}"
            + ("  (unknown: scored as topic_other)" if topic in self.unknown_topics else "")
            for topic, n in shown
        ]
        if rest := unknown[LISTED:]:
            rows = sum(n for _, n in rest)
            lines.append(f"  ({len(rest)} more unknown topics: {_rows(rows)})")
        return "\n".join(lines)

    def warnings(self) -> list[str]:
        """What the user should look at before training on this output (also logged).

        Each note names at most ``LISTED`` columns or topics, each cut to ``NAME_CHARS``."""
        notes = []
        columns = _commonest(self.unknown_columns)
        if columns:
            listed = _first([_column_note(c, n) for c, n in columns[:LISTED]], len(columns))
            notes.append(f"columns no stage reads (kept out of the output): {listed}")
        if self.written and not self.labelled:
            note = f"no row has {LABEL_COLUMN} (the label column): these rows can be scored, "
            note += "not trained on"
            if columns:
                note += f"; {_label_hint([c for c, _ in columns])}"
            notes.append(note)
        if self.unknown_topics:
            topics = _commonest(self.unknown_topics)
            listed = _first([_topic_note(t, n) for t, n in topics[:LISTED]], len(topics))
            rows = sum(self.unknown_topics.values())
            notes.append(
                f"{_rows(rows)} {'has' if rows == 1 else 'have'} a topic that is none of "
                f"FinanceMath's 7 (features score them as topic_other): {listed}"
            )
        return notes


def _label_hint(columns: list[str]) -> str:
    """Which unread columns may hold the label: those closest to it, else the first few."""
    near = [c for c in columns if closest_column(c) == LABEL_COLUMN]
    named = near[:LABEL_GUESSES] or columns[:LABEL_GUESSES]
    more = len(near or columns) - len(named)
    names = ", ".join(repr(_cut(c)) for c in named) + (f" (+{more} more)" if more else "")
    which = names if len(named) == 1 and not more else f"one of {names}"
    return f"if {which} holds the answers, rename it to {LABEL_COLUMN}"


def _column_note(column: str, rows: int) -> str:
    hint = closest_column(column)
    return f"{_cut(column)!r} ({_rows(rows)}" + (f"; did you mean {hint}?)" if hint else ")")


def _topic_note(topic: str, rows: int) -> str:
    hint = closest_topic(topic)
    return f"{_cut(topic)!r} ({_rows(rows)}" + (f"; closest: {hint!r})" if hint else ")")


def _first(notes: list[str], total: int) -> str:
    """At most ``LISTED`` of ``total`` notes on one line, then how many more."""
    if total <= LISTED:
        return ", ".join(notes[:LISTED])
    where = (
        "see the manifest"
        if total <= MANIFEST_KEPT
        else (f"the manifest keeps the {MANIFEST_KEPT} with most rows")
    )
    return ", ".join(notes[:LISTED]) + f", and {total - LISTED} more ({where})"


def _commonest(counts: dict[str, int]) -> list[tuple[str, int]]:
    """(name, rows), most rows first, then by name: the order every listing cuts from."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def _cut(name: str) -> str:
    """``name`` as shown: at most ``NAME_CHARS`` characters, ending in "..." when cut."""
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 3] + "..."


def _kept(counts: dict[str, int], what: str) -> dict[str, Any]:
    """``{what: the MANIFEST_KEPT names with most rows (cut)}``, and ``{what}_more`` for the rest.

    Cut names that collide add their rows, so the kept rows plus ``_more.rows`` equal the total.
    """
    ranked = _commonest(counts)
    kept: Counter[str] = Counter()
    for name, rows in ranked[:MANIFEST_KEPT]:
        kept[_cut(name)] += rows
    out: dict[str, Any] = {what: dict(sorted(kept.items()))}
    if rest := ranked[MANIFEST_KEPT:]:
        out[f"{what}_more"] = {"names": len(rest), "rows": sum(n for _, n in rest)}
    return out


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def ingest(cfg: IngestionSettings, output: Path, hf_cache_dir: Path) -> IngestionSummary:
    """Run ingestion for the source ``cfg`` names into ``output`` (+ rejects and manifest beside
    it; the hub's downloads under ``hf_cache_dir``). Raises SourceError (nothing written) on bad
    input. The caller slices the settings: ``ingest(s.ingestion, s.ingestion_output,
    s.paths.hf_cache_dir)``."""
    rows, provenance = load_rows(cfg, hf_cache_dir)
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
    """What a reader needs to trust the pair: counts, where the rows came from, checksums.

    Bounded whatever the input (see the module docstring): each name -> rows map keeps its
    ``MANIFEST_KEPT`` commonest names, cut to ``NAME_CHARS``, and counts the rest in ``<map>_more``.
    """
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
        **_kept(summary.per_topic, "per_topic"),
        **_kept(summary.unknown_topics, "unknown_topics"),
        **_kept(summary.unknown_columns, "unknown_columns"),
        "files": {
            summary.output.name: _file_facts(output, summary.written),
            summary.rejects_path.name: _file_facts(rejects, summary.rejected),
        },
    }


def _file_facts(path: Path, rows: int) -> dict[str, Any]:
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"rows": rows, "bytes": path.stat().st_size, "sha256": digest}
