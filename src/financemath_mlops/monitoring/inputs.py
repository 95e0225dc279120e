"""What a report compares: anything the user points at, turned into one feature frame.

A report input is a feature Parquet (the features stage's output or a run's training table), a
FinanceMath file (JSON array, JSONL or Parquet of raw records: featurised here with the same
functions and embedding model as training), or the prediction log directory (over a time window).
The model in use supplies the default reference (its run's training feature table) and the
embedding settings, so on-the-fly features are built exactly as the model's were.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from financemath_mlops.config import FeatureSettings, MLflowSettings, PathsSettings
from financemath_mlops.errors import StageError
from financemath_mlops.features.rows import FEATURE_COLUMNS, N_HAND_FEATURES
from financemath_mlops.monitoring.evidence import row_shortfall

log = logging.getLogger(__name__)

HAND_COLUMNS: tuple[str, ...] = FEATURE_COLUMNS[:N_HAND_FEATURES]
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class MonitoringError(StageError):
    """A report cannot be made from the given inputs; the message says what to do."""


class TooFewRows(MonitoringError):
    """A side of a report has fewer than ``monitoring.min_rows`` rows (an empty window included).

    ``counts`` is the side counted (``{"current": 6}``): the scheduled flow publishes it as a
    skipped drift section, so ``/metrics`` shows the small window instead of the last real one.
    """

    def __init__(self, message: str, counts: dict[str, int]) -> None:
        super().__init__(message)
        self.counts = dict(counts)


MIN_ROWS_HINT = "or lower the minimum with --min-rows N (FMOPS_MONITORING__MIN_ROWS)"


def require_rows(counts: dict[str, int], min_rows: int, source: str, more: str) -> None:
    """Refuse (exit 2) when a side of a report has fewer than ``min_rows`` rows.

    The drift and performance jobs call it before any statistics, from the command line and the
    scheduled flow alike; ``source`` is the input counted, ``more`` says where to get more rows.
    """
    shortfall = row_shortfall(counts, min_rows)
    if shortfall:
        raise TooFewRows(
            f"{source}: {shortfall}, fewer than monitoring.min_rows: too few to be evidence either "
            f"way, so no report was made; {more}, {MIN_ROWS_HINT}",
            counts,
        )


@dataclass
class ReportInput:
    """A feature frame plus where it came from (for the console, the JSON and MLflow)."""

    frame: Any
    source: str
    kind: str  # features | records | prediction-log | training-features
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(self.frame)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "kind": self.kind, "rows": self.rows, **self.details}


@dataclass
class ModelContext:
    """The model a report is about: its registry identity and its run's feature manifest."""

    uri: str
    ref: Any
    manifest: dict[str, Any]

    def identity(self) -> dict[str, Any]:
        ref = self.ref
        return {
            "uri": self.uri,
            "name": ref.name,
            "version": ref.version,
            "alias": ref.alias,
            "run_id": ref.run_id,
        }


def resolve_model(store: MLflowSettings, uri: str, work: Path) -> ModelContext:
    """The model at ``uri`` in ``store`` and its run's feature manifest."""
    from financemath_mlops import runs

    runs.configure(store)
    ref = runs.resolve(uri)
    if ref.run_id is None:
        raise MonitoringError(f"model {uri} has no MLflow run to read its training data from")
    return ModelContext(uri, ref, runs.load_feature_manifest(ref.run_id, work))


def training_features(model: ModelContext, work: Path) -> ReportInput:
    """The model's reference: the training feature table its run recorded."""
    from financemath_mlops import runs

    frame = runs.load_training_features(model.ref.run_id, work)
    check_feature_frame(frame, f"the training features of run {model.ref.run_id}")
    return ReportInput(
        frame,
        f"{model.uri} training features (run {model.ref.run_id})",
        "training-features",
        {"model_version": model.ref.version},
    )


def parse_time(value: str | None, now: datetime | None = None) -> datetime | None:
    """ISO-8601 (naive means UTC) or a duration before now: ``90m``, ``24h``, ``7d``, ``2w``."""
    if value is None:
        return None
    text = value.strip()
    match = _RELATIVE.match(text.lower())
    if match:
        delta = timedelta(**{_UNITS[match[2]]: float(match[1])})
        return (now or datetime.now(UTC)) - delta
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitoringError(
            f"cannot read the time {value!r}: use ISO-8601 (2025-01-31T12:00:00Z) or a duration "
            "before now (90m, 24h, 7d)"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_feature_frame(frame: Any, where: str) -> None:
    missing = [c for c in HAND_COLUMNS if c not in frame.columns]
    if missing:
        raise MonitoringError(
            f"{where} lacks feature columns {missing[:5]}: pass a features-stage Parquet, a "
            "FinanceMath file or the prediction log directory"
        )


class Featurizer:
    """Raw FinanceMath records -> feature rows, with the model's embedding settings.

    The embedder is loaded on first use, so reports over feature tables never load it.
    Embeddings go through the same on-disk cache as the features stage.
    """

    def __init__(
        self,
        features: FeatureSettings,
        paths: PathsSettings,
        embedding: dict[str, Any] | None = None,
    ) -> None:
        self.features = features  # the embedding and partition size
        self.paths = paths  # the model weights, the ONNX bundle and the embedding cache
        self.embedding = embedding
        self._embedder: Any = None
        self._info: dict[str, Any] | None = None

    def _load(self) -> tuple[Any, dict[str, Any]]:
        if self._embedder is None:
            from financemath_mlops.features.build import embedder_for

            cfg = self.features.embedding
            if self.embedding:
                cfg = cfg.model_copy(
                    update={
                        "model_id": self.embedding["model_id"],
                        "backend": self.embedding["backend"],
                        "max_length": int(self.embedding["max_length"]),
                    }
                )
            self._embedder, self._info = embedder_for(cfg, self.paths)
            if self.embedding and str(self._info["revision"]) != str(self.embedding["revision"]):
                raise MonitoringError(
                    f"the model's features were embedded with {self.embedding['model_id']} "
                    f"revision {self.embedding['revision']}, but this machine resolves revision "
                    f"{self._info['revision']}: embeddings would not be comparable; set "
                    "FMOPS_FEATURES__EMBEDDING__REVISION (or local_path) to the model's weights"
                )
        assert self._info is not None
        return self._embedder, self._info

    def __call__(self, rows: list[dict[str, Any]], where: str) -> Any:
        import pyarrow as pa

        from financemath_mlops.features.build import featurize_chunk
        from financemath_mlops.ingestion.validate import validate_rows
        from financemath_mlops.records import KNOWN_COLUMNS

        result = validate_rows(rows, {"source": "local", "dataset_id": where})
        if result.rejects:
            log.warning("%s: %d of %d rows rejected", where, len(result.rejects), result.read)
        if not result.records:
            raise MonitoringError(f"{where} has no valid FinanceMath records")
        records = [{k: getattr(r, k) for k in KNOWN_COLUMNS} for r in result.records]
        embedder, info = self._load()
        cache = self.paths.cache_dir / "embeddings"
        step = self.features.partition_rows
        tables = [
            featurize_chunk(records[i : i + step], embedder, info, cache)[0]
            for i in range(0, len(records), step)
        ]
        log.info("featurised %d records of %s", len(records), where)
        return pa.concat_tables(tables).to_pandas()


def load_input(
    path: Path,
    featurizer: Featurizer,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ReportInput:
    """A feature Parquet, a FinanceMath file, or the prediction log directory (time window)."""
    path = Path(path)
    if path.is_dir():
        return prediction_log_input(path, since, until)
    if not path.is_file():
        raise MonitoringError(
            f"{path} not found: pass a feature Parquet, a FinanceMath .json/.jsonl/.parquet file "
            "or the prediction log directory"
        )
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        names = set(pq.read_schema(path).names)
        if "question" not in names:
            import pandas as pd

            frame = pd.read_parquet(path)
            check_feature_frame(frame, str(path))
            return ReportInput(frame, str(path), "features")
    from financemath_mlops.ingestion.sources import SourceError, read_local_file

    try:
        rows = read_local_file(path)
    except SourceError as exc:
        raise MonitoringError(str(exc)) from None
    return ReportInput(featurizer(rows, str(path)), str(path), "records")


def prediction_log_input(
    directory: Path, since: datetime | None, until: datetime | None
) -> ReportInput:
    from financemath_mlops.monitoring.prediction_log import log_files, read_prediction_log

    frame = read_prediction_log(directory, since=since, until=until)
    window = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }
    if frame.empty:
        raise TooFewRows(
            f"no predictions logged in {directory} ({len(log_files(directory))} files) between "
            f"{window['since'] or 'the start'} and {window['until'] or 'now'}: send traffic to "
            "the service, widen --since/--until, or pass a file",
            {"current": 0},
        )
    check_feature_frame(frame, f"the prediction log {directory}")
    window["first"] = frame["timestamp"].min().isoformat()
    window["last"] = frame["timestamp"].max().isoformat()
    return ReportInput(frame, str(directory), "prediction-log", window)


def labelled_records(rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Valid records with a ground truth (performance needs labels)."""
    from financemath_mlops.ingestion.validate import validate_rows
    from financemath_mlops.records import KNOWN_COLUMNS

    result = validate_rows(rows, {"source": "local", "dataset_id": where})
    records = [
        {k: getattr(r, k) for k in KNOWN_COLUMNS}
        for r in result.records
        if r.ground_truth is not None
    ]
    if not records:
        raise MonitoringError(
            f"{where} has no labelled records (ground_truth is null or missing): a performance "
            "report needs labels, e.g. the validation split or a newly labelled batch"
        )
    return records
