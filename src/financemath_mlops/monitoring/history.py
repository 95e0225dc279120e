"""The history of reports: ``reports/index.jsonl``, one line per report, newest last.

``latest.json`` answers "what is the newest number" (for /metrics); this index answers "what did
the reports say over time, and where is each one": every drift or performance run appends its
headline numbers and its dated folder (``reports/<UTC timestamp>/``). Append-only JSON lines, so
a crash mid-run can cost at most its own line, and readers skip a torn last line.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from financemath_mlops.atomic import append_line
from financemath_mlops.monitoring.publish import finite_json, readable

log = logging.getLogger(__name__)

INDEX_FILE = "index.jsonl"


def record_report(reports_dir: Path | str, kind: str, numbers: Mapping[str, Any]) -> Path:
    """Append one report's headline numbers to the index; returns the index path."""
    path = Path(reports_dir) / INDEX_FILE
    entry = {"kind": kind, "time": datetime.now(UTC).isoformat(timespec="seconds"), **numbers}
    # One write of one line in append mode: concurrent writers interleave whole lines, and a
    # full disk leaves no torn line (atomic.append_line cuts it back and raises).
    append_line(path, json.dumps(finite_json(entry), allow_nan=False, default=str))
    readable(path)
    return path


def read_history(
    reports_dir: Path | str, kind: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """The last ``limit`` index entries (of one ``kind`` if given), oldest first."""
    path = Path(reports_dir) / INDEX_FILE
    kept: deque[dict[str, Any]] = deque(maxlen=max(limit, 1))
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                try:
                    entry = json.loads(line)
                except ValueError:
                    log.warning("%s line %d is not JSON (a torn write?): skipped", path, number)
                    continue
                if isinstance(entry, dict) and (kind is None or entry.get("kind") == kind):
                    kept.append(entry)
    except FileNotFoundError:
        return []
    return list(kept)


def history_table(entries: list[dict[str, Any]]) -> str:
    """A plain-text table of index entries for the console."""
    if not entries:
        return "no reports yet"
    lines = [f"{'time':25} {'kind':15} {'headline':44} report"]
    for e in entries:
        if e.get("kind") == "retrain-request":
            model = e.get("model") or {}
            headline = f"{model.get('name')} v{model.get('version')}: " + "; ".join(
                e.get("reasons") or []
            )
        elif e.get("kind") == "drift":
            headline = (
                f"share {e.get('share', 0):.0%} of {e.get('columns')} columns, "
                f"drift={e.get('dataset_drift')}, rows {e.get('current_rows')}"
            )
        else:
            headline = (
                f"log-MAE {_num(e.get('log_mae'))} (training {_num(e.get('training_log_mae'))}), "
                f"rows {e.get('rows')}"
            )
        report = e.get("report") or e.get("event_id") or ""
        lines.append(f"{e.get('time', ''):25} {e.get('kind', ''):15} {headline:44} {report}")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"
