"""The drift report: per-column drift of what the model sees, current data vs its reference.

Tested columns: the 28 table and metadata features (0/1 flags and topic one-hots as categorical,
the rest numerical) plus the first principal components of the question embeddings (see
:mod:`.embedding_drift`). Each column gets Evidently's default test for its type and size; the
report's headline is the share of drifted columns, and "dataset drift" means that share reached
``drift_share_threshold`` (default 0.3; see docs/monitoring.md for why).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from financemath_mlops.monitoring.embedding_drift import (
    EMBEDDING_COLUMNS,
    fit_projection,
    mean_embedding_test,
)
from financemath_mlops.monitoring.inputs import HAND_COLUMNS, MonitoringError, ReportInput
from financemath_mlops.monitoring.publish import write_report_files

log = logging.getLogger(__name__)

BINARY_PREFIXES = ("q_has_", "topic_")
EMBEDDING_P_VALUE = 0.05
LARGE_REFERENCE = 1000  # Evidently's own switch from p-value tests to distances


def numerical_method(reference_rows: int) -> str:
    """K-S (p < 0.05) up to 1000 reference rows, normed Wasserstein distance (>= 0.1) above.

    Evidently's own rule, except that it is applied to every numerical column: left alone,
    Evidently tests a count with a few distinct values (``tbl_count``) by chi-squared, where a
    single question with more tables than any reference question reads as certain drift.
    """
    return "ks" if reference_rows <= LARGE_REFERENCE else "wasserstein"


def is_flag(column: str) -> bool:
    """0/1 features, tested as categories (a proportion test), not as a continuous variable."""
    return column.startswith(BINARY_PREFIXES)


def group_of(column: str) -> str:
    if column.startswith("emb_pc"):
        return "embedding"
    return "table" if column.startswith("tbl_") else "metadata"


@dataclass
class DriftOutcome:
    """Everything the drift report says, as plain data."""

    reference: dict[str, Any]
    current: dict[str, Any]
    columns: list[dict[str, Any]]
    skipped: dict[str, str]
    drift_share_threshold: float
    embedding: dict[str, Any]
    model: dict[str, Any] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    evidently: Any = field(default=None, repr=False)

    @property
    def drifted(self) -> int:
        return sum(bool(c["detected"]) for c in self.columns)

    @property
    def share(self) -> float:
        return self.drifted / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        return bool(self.columns) and self.share >= self.drift_share_threshold

    def summary(self) -> dict[str, Any]:
        return {
            "columns": len(self.columns),
            "drifted": self.drifted,
            "share": round(self.share, 6),
            "drift_share_threshold": self.drift_share_threshold,
            "dataset_drift": self.dataset_drift,
            "drifted_by_group": {
                group: sum(c["detected"] for c in self.columns if c["group"] == group)
                for group in ("table", "metadata", "embedding")
            },
        }

    def top(self, n: int = 10) -> list[dict[str, Any]]:
        """Drifted columns first, most significant first (p-values ascending, distances desc)."""

        def strength(column: dict[str, Any]) -> float:
            score, threshold = column["score"], column["threshold"]
            if "p_value" in column["method"]:
                return -math.log10(max(score, 1e-300)) + math.log10(threshold)
            return score / threshold if threshold else score

        ranked = sorted(self.columns, key=lambda c: (not c["detected"], -strength(c)))
        return ranked[:n]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "drift",
            "created_at": self.created_at,
            "model": self.model,
            "reference": self.reference,
            "current": self.current,
            "summary": self.summary(),
            "embedding": self.embedding,
            "columns": self.columns,
            "skipped": self.skipped,
            "evidently": self.evidently.raw() if self.evidently is not None else None,
        }

    def console(self, top: int = 10) -> str:
        s = self.summary()
        verdict = "DATASET DRIFT" if s["dataset_drift"] else "no dataset drift"
        lines = [
            f"drift: {self.current['source']} ({self.current['rows']} rows)",
            f"   vs: {self.reference['source']} ({self.reference['rows']} rows)",
            f"  drifted columns: {s['drifted']} of {s['columns']} ({s['share']:.1%}); threshold "
            f"{s['drift_share_threshold']:.0%} -> {verdict}",
            "  by group: "
            + ", ".join(f"{g} {n}" for g, n in s["drifted_by_group"].items())
            + (f"; {len(self.skipped)} columns not testable" if self.skipped else ""),
        ]
        emb = self.embedding
        if emb.get("status") == "ok":
            lines.append(
                f"  embeddings: {emb['drifted_components']} of {emb['components']} principal "
                f"components drifted; mean-embedding cosine distance {emb['mean_cosine_distance']:.4f}"
                f" (permutation p={emb['mean_p_value']:.3f})"
            )
        else:
            lines.append(f"  embeddings: not tested ({emb.get('reason')})")
        lines.append(f"  {'top columns':<38}{'method':<26}{'score':>11}{'threshold':>11}  drift")
        for c in self.top(top):
            lines.append(
                f"  {c['column'][:37]:<38}{c['method'][:25]:<26}{c['score']:>11.3g}"
                f"{c['threshold']:>11.3g}  {'YES' if c['detected'] else 'no'}"
            )
        return "\n".join(lines)


def compare(
    reference: ReportInput,
    current: ReportInput,
    drift_share_threshold: float = 0.3,
    components: int = 5,
) -> DriftOutcome:
    """Run the drift tests of ``current`` against ``reference``.

    Refuses (:class:`MonitoringError`) when no column has enough values on both sides for a
    test, rather than a report with nothing in it: the row minimum of the jobs
    (``monitoring.min_rows``) normally stops such inputs first, but it can be lowered.
    """
    from financemath_mlops.monitoring.evidently_adapter import (
        MIN_VALUES,
        drift_report,
        testable_columns,
    )

    ref = reference.frame[[c for c in HAND_COLUMNS if c in reference.frame]].copy()
    cur = current.frame[[c for c in HAND_COLUMNS if c in current.frame]].copy()
    numerical = [c for c in HAND_COLUMNS if not is_flag(c)]
    categorical = [c for c in HAND_COLUMNS if is_flag(c)]
    embedding = embedding_columns(reference.frame, current.frame, components, ref, cur)
    numerical += embedding.get("names", [])
    if len(testable_columns(ref, cur, [*numerical, *categorical])) == len(numerical + categorical):
        raise MonitoringError(
            f"no feature column has {MIN_VALUES} values on both sides ({len(ref)} reference rows, "
            f"{len(cur)} current rows): nothing can be tested for drift; pass more rows"
        )
    result = drift_report(
        ref, cur, numerical, categorical, drift_share_threshold, numerical_method(len(ref))
    )
    columns = [
        {
            "column": c.column,
            "group": group_of(c.column),
            "kind": c.kind,
            "method": c.method,
            "score": c.score,
            "threshold": c.threshold,
            "detected": c.detected,
        }
        for c in result.columns
    ]
    if embedding.get("status") == "ok":
        embedding["drifted_components"] = sum(
            c["detected"] for c in columns if c["group"] == "embedding"
        )
    return DriftOutcome(
        reference=reference.describe(),
        current=current.describe(),
        columns=columns,
        skipped=result.skipped,
        drift_share_threshold=drift_share_threshold,
        embedding=embedding,
        evidently=result,
    )


def embedding_columns(
    reference: Any, current: Any, components: int, ref_out: Any, cur_out: Any
) -> dict[str, Any]:
    """Add principal-component columns to ``ref_out``/``cur_out``; describe the embedding test."""
    missing = [c for c in EMBEDDING_COLUMNS if c not in reference or c not in current]
    if missing:
        side = "reference" if missing[0] not in reference else "current"
        return {"status": "skipped", "reason": f"no embedding columns in the {side} data"}
    ref_emb = reference[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float64)
    cur_emb = current[list(EMBEDDING_COLUMNS)].to_numpy(dtype=np.float64)
    ref_ok, cur_ok = np.isfinite(ref_emb).all(axis=1), np.isfinite(cur_emb).all(axis=1)
    if ref_ok.sum() < 3 or cur_ok.sum() < 3:
        return {"status": "skipped", "reason": "fewer than 3 complete embedding rows on a side"}
    projection = fit_projection(ref_emb[ref_ok], components)
    for values, ok, out in ((ref_emb, ref_ok, ref_out), (cur_emb, cur_ok, cur_out)):
        projected = np.full((len(values), len(projection.axes)), np.nan)
        projected[ok] = projection.project(values[ok])
        for j, column in enumerate(projection.names):
            out[column] = projected[:, j]
    distance, p_value = mean_embedding_test(ref_emb[ref_ok], cur_emb[cur_ok])
    return {
        "status": "ok",
        "method": "principal components of the reference embeddings, one drift test each; "
        "mean-embedding cosine distance with a permutation p-value",
        "components": len(projection.axes),
        "names": projection.names,
        "explained_variance_ratio": [
            round(float(v), 6) for v in projection.explained_variance_ratio
        ],
        "mean_cosine_distance": distance,
        "mean_p_value": p_value,
        "mean_drift": bool(p_value < EMBEDDING_P_VALUE),
    }


def report_dir(reports_dir: Path, now: datetime | None = None) -> Path:
    """``reports/<UTC timestamp>/``, made unique if two reports start in the same second."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    candidate = Path(reports_dir) / stamp
    n = 1
    while candidate.exists():
        n += 1
        candidate = Path(reports_dir) / f"{stamp}-{n}"
    return candidate


def write_drift_report(outcome: DriftOutcome, output: Path) -> dict[str, Path]:
    """``drift.html`` (Evidently's page) and ``drift.json`` (ours, with Evidently's raw JSON)."""
    return write_report_files(output, "drift", outcome.evidently, outcome.to_json())
