"""The history of reports: ``reports/index.jsonl``, one line per report, newest last.

``latest.json`` answers "what is the newest number" (for /metrics); this index answers "what did
the reports say over time, and where is each one": every drift or performance run appends its
headline numbers and its dated folder (``reports/<UTC timestamp>/``). Append-only JSON lines, so
a crash mid-run can cost at most its own line, and readers skip a torn last line.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from financemath_mlops.atomic import append_line
from financemath_mlops.monitoring.publish import finite_json, readable

log = logging.getLogger(__name__)

INDEX_FILE = "index.jsonl"
# The generated example the docs' plot is drawn from (``python -m ...monitoring.history``).
EXAMPLE_INDEX = Path("docs") / "examples" / "monitoring-history.jsonl"


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
    return read_index(Path(reports_dir) / INDEX_FILE, kind, limit)


def read_index(path: Path, kind: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """:func:`read_history` of an index file named directly (a copy, the committed example)."""
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


# --- the drift-over-time picture -----------------------------------------------------------

EXAMPLE_START = datetime(2026, 11, 20, tzinfo=UTC)


def example_history(days: int = 14, seed: int = 32) -> list[dict[str, Any]]:
    """A generated index for the docs and tests (a fresh clone has no ``reports/index.jsonl``).

    What the monitoring deployment writes over ``days``: a drift report every 6 hours whose
    drifted share wanders under the 0.3 threshold, then climbs over it from day 9 (new topics
    in the traffic); a performance report a day whose log-MAE follows; one retraining request
    when both say so. Deterministic for a given seed, so the committed file can be checked.
    """
    import random

    rng = random.Random(seed)
    entries: list[dict[str, Any]] = []
    model = {"name": "financemath-regressor", "version": "3", "alias": "champion"}
    requested = False
    for step in range(days * 4):
        when = EXAMPLE_START + timedelta(hours=6 * step)
        day = step / 4
        drifting = max(0.0, day - 9.0) / 3.0  # 0 until day 9, then rising
        share = min(1.0, max(0.0, 0.08 + 0.05 * rng.random() + 0.35 * drifting))
        columns = 40
        entries.append(
            {
                "kind": "drift",
                "time": when.isoformat(timespec="seconds"),
                "columns": columns,
                "drifted": round(share * columns),
                "share": round(share, 3),
                "drift_share_threshold": 0.3,
                "dataset_drift": share >= 0.3,
                "current_rows": 400 + rng.randrange(200),
                "reference_rows": 800,
                "model": model,
                "report": f"reports/{when:%Y%m%dT%H%M%SZ}-drift",
            }  # fmt: skip
        )
        if step % 4 == 3:
            log_mae = 0.62 + 0.04 * rng.random() + 0.45 * drifting
            entries.append(
                {
                    "kind": "performance",
                    "time": (when + timedelta(minutes=5)).isoformat(timespec="seconds"),
                    "log_mae": round(log_mae, 3),
                    "training_log_mae": 0.64,
                    "rows": 120 + rng.randrange(40),
                    "model": model,
                    "report": f"reports/{when:%Y%m%dT%H%M%SZ}-performance",
                }  # fmt: skip
            )
            if not requested and log_mae > 1.25 * 0.64 and share >= 0.3:
                requested = True
                entries.append(
                    {
                        "kind": "retrain-request",
                        "time": (when + timedelta(minutes=6)).isoformat(timespec="seconds"),
                        "model": model,
                        "reasons": [
                            f"drift: share {share:.0%} >= 30%",
                            f"performance: log-MAE {log_mae:.3f} > 1.25 x 0.640",
                        ],
                        "event_id": "00000000-0000-4000-8000-000000000032",
                    }  # fmt: skip
                )
    return entries


def write_example_history(path: Path, days: int = 14, seed: int = 32) -> Path:
    """Write :func:`example_history` as an index file (JSON lines, like the real one)."""
    lines = [json.dumps(entry, sort_keys=True) for entry in example_history(days, seed)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def plot_history(entries: list[dict[str, Any]], path: Path) -> Path:
    """Drift over time as a PNG: the drifted share of columns per drift report against its
    threshold (reports that said "drift" marked), the performance reports' log-MAE against the
    training holdout's, and the retraining requests as vertical lines. Written to a temp file
    and renamed, so ``path`` is the old picture or the new one, never half of one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def when(entry: dict[str, Any]) -> datetime | None:
        try:
            return datetime.fromisoformat(str(entry.get("time")))
        except ValueError:
            return None

    drift = [
        (when(e), e) for e in entries if e.get("kind") == "drift" and e.get("share") is not None
    ]
    perf = [
        (when(e), e)
        for e in entries
        if e.get("kind") == "performance" and e.get("log_mae") is not None
    ]
    requests = [when(e) for e in entries if e.get("kind") == "retrain-request"]
    drift = [(t, e) for t, e in drift if t is not None]
    perf = [(t, e) for t, e in perf if t is not None]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    if drift:
        top.plot([t for t, _ in drift], [e["share"] for _, e in drift], marker=".",
                 label="drifted share of columns")  # fmt: skip
        flagged = [(t, e["share"]) for t, e in drift if e.get("dataset_drift")]
        if flagged:
            top.scatter(*zip(*flagged, strict=True), color="red", zorder=3,
                        label="report said: dataset drift")  # fmt: skip
        threshold = drift[-1][1].get("drift_share_threshold")
        if isinstance(threshold, int | float):
            top.axhline(threshold, color="red", linestyle="--", linewidth=1,
                        label=f"threshold {threshold:g}")  # fmt: skip
    top.set(ylabel="share of columns", title="input drift per report", ylim=(0, 1))
    if perf:
        bottom.plot([t for t, _ in perf], [e["log_mae"] for _, e in perf], marker="o",
                    label="log-MAE on labelled live rows")  # fmt: skip
        training = [e.get("training_log_mae") for _, e in perf]
        if all(isinstance(x, int | float) for x in training):
            bottom.plot([t for t, _ in perf], training, linestyle="--", color="gray",
                        label="training holdout log-MAE")  # fmt: skip
    bottom.set(ylabel="log-MAE", title="model quality per performance report", xlabel="UTC")
    for axis in (top, bottom):
        for i, t in enumerate(r for r in requests if r is not None):
            axis.axvline(t, color="purple", linewidth=1,
                         label="retraining requested" if i == 0 else None)  # fmt: skip
        axis.grid(True, alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, dpi=90, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


if __name__ == "__main__":  # regenerate the committed example: see docs/monitoring.md
    import sys

    print(write_example_history(Path(sys.argv[1] if len(sys.argv) > 1 else EXAMPLE_INDEX)))
