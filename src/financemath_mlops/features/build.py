"""The features stage: ingested JSONL -> `finance_math_features.parquet`, its manifest inside it.

Reads only records ingestion vouched for (:mod:`.lineage`). Streams the input in chunks and writes
one Parquet row group per chunk, so memory stays flat as the data grows. The table carries its own
manifest (column order, how embeddings were made, which records, row count) in the Parquet
file's key-value metadata, so two tables in one folder never share one, and a table rewritten by
another tool loses it rather than keeping one that no longer describes it. Embeddings come from the configured backend through an on-disk cache keyed by
model id, revision, weight source, backend and text hash, so a re-run on unchanged input reuses
them. The output is written atomically.

Chunks run on the configured executor (:mod:`financemath_mlops.executors`): in this process, or
on a Dask cluster where each worker builds the embedder once (one compute thread per worker unless
``embedding.threads`` says otherwise) and the tables come back in input order. A ``tcp://``
cluster needs the ONNX bundle and the embedding cache on a filesystem its workers share.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from financemath_mlops.atomic import atomic_path
from financemath_mlops.config import EmbeddingSettings, FeatureSettings, PathsSettings
from financemath_mlops.executors import (
    ExecutorError,
    Partition,
    WorkerCached,
    map_in_order,
    model_loads,
)
from financemath_mlops.features.lineage import FeatureError, records_provenance
from financemath_mlops.features.rows import FEATURE_COLUMNS, FEATURE_VERSION, feature_matrix
from financemath_mlops.records import RecordInput

log = logging.getLogger(__name__)

ID_COLUMN = "question_id"
TOPIC_COLUMN = "topic"
TARGET_COLUMN = "target"
# The table's manifest: a key of the Parquet file's key-value metadata, written with the rows.
MANIFEST_KEY = "financemath.features"
# What the stage wrote beside the table before tables carried their manifest (one per folder).
LEGACY_COLUMNS_FILE = "feature_columns.json"
MANIFEST_COMMAND = "python -m financemath_mlops.features manifest"


@dataclass
class FeatureSummary:
    output: Path
    manifest: dict[str, Any]
    rows: int
    labelled: int
    embedding: dict[str, Any]
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0
    table_warnings: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        data = self.manifest["data"]
        vouched = (
            f"validated by ingestion ({data['ingestion_manifest']})"
            if data.get("validated") == "ingestion"
            else "validated elsewhere (--validated-elsewhere)"
        )
        return "\n".join(
            [
                f"features: {self.rows} rows ({self.labelled} labelled) x "
                f"{len(FEATURE_COLUMNS)} features in {self.seconds:.1f}s",
                f"  output:     {self.output}",
                f"  records:    {data['input']}, {vouched}",
                f"  manifest:   inside the table (`{MANIFEST_COMMAND} {self.output}`)",
                f"  embeddings: {self.embedding['backend']} {self.embedding['model_id']} "
                f"({self.embedding['source']}, revision {self.embedding['revision']}, "
                f"max_length {self.embedding['max_length']}); "
                f"cache hits {self.cache_hits}, computed {self.cache_misses}",
            ]
        )


def output_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field(ID_COLUMN, pa.string()),
            pa.field(TOPIC_COLUMN, pa.string()),
            pa.field(TARGET_COLUMN, pa.float64()),
            *(pa.field(name, pa.float64()) for name in FEATURE_COLUMNS),
        ]
    )


def read_jsonl_chunks(
    path: Path, chunk_rows: int, shown: Path | None = None
) -> Iterator[list[dict[str, Any]]]:
    """Yield lists of ingested records; a malformed line is an error naming the line (of
    ``shown``, the name the user gave, when ``path`` is where it resolved)."""
    with path.open(encoding="utf-8") as handle:
        rows = (
            _ingested(shown or path, n, line) for n, line in enumerate(handle, 1) if line.strip()
        )
        while chunk := list(islice(rows, chunk_rows)):
            yield chunk


def _ingested(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise FeatureError(f"{path}:{number} is not valid JSON ({exc}); re-run ingestion") from None
    if not isinstance(row, dict) or "question" not in row or ID_COLUMN not in row:
        raise FeatureError(
            f"{path}:{number} is not an ingested record (needs question_id, question); "
            "run `python -m financemath_mlops.ingestion` first"
        )
    return row


def embedding_key(info: dict[str, Any]) -> dict[str, str]:
    """What makes two embeddings of the same text interchangeable.

    ``weights_sha256`` is in ``info`` when no commit pins the weights (see
    :func:`~financemath_mlops.features.embeddings.embedding_cache_key`): new weights under the
    same revision string must not reuse old vectors.
    """
    key = {k: str(info[k]) for k in ("model_id", "revision", "source", "backend", "max_length")}
    key.update({k: str(info[k]) for k in _OPTIONAL_KEY_FIELDS if info.get(k) is not None})
    return key


_OPTIONAL_KEY_FIELDS = ("weights_sha256", "precision")


def featurize_chunk(
    rows: list[dict[str, Any]], embedder: Any, info: dict[str, Any], cache_dir: Path | None
) -> tuple[pa.Table, dict[str, int]]:
    """Feature table for one chunk of ingested records (used by the local and Dask executors)."""
    from financemath_mlops.features.embedding_cache import embed_with_cache

    questions = [str(r["question"]) for r in rows]
    stats = {"hits": 0, "misses": len(rows), "warnings": 0}
    if cache_dir is not None:
        result = embed_with_cache(embedder, questions, cache_dir, embedding_key(info))
        vectors, stats["hits"], stats["misses"] = result.vectors, result.hits, result.misses
    else:
        vectors = embedder.embed(questions)
    warnings: list[list[str]] = []
    matrix = feature_matrix([RecordInput.from_mapping(r) for r in rows], vectors, warnings)
    stats["warnings"] = sum(1 for w in warnings if w)
    columns: dict[str, Any] = {
        ID_COLUMN: [str(r[ID_COLUMN]) for r in rows],
        TOPIC_COLUMN: [r.get("topic") for r in rows],
        TARGET_COLUMN: [_target(r.get("ground_truth")) for r in rows],
    }
    for j, name in enumerate(FEATURE_COLUMNS):
        columns[name] = matrix[:, j]
    return pa.table(columns, schema=output_schema()), stats


def _target(value: Any) -> float | None:
    return None if value is None else float(value)


def embedder_for(cfg: EmbeddingSettings, paths: PathsSettings, show_progress: bool = False):
    """Resolve the model weights and build the configured embedding backend (the hub's
    downloads and the ONNX bundles under ``paths``)."""
    from financemath_mlops.features.embeddings import embedding_cache_key, make_embedder
    from financemath_mlops.features.weights import resolve_weights

    resolved = resolve_weights(
        cfg.model_id,
        revision=cfg.revision,
        local_path=cfg.local_path,
        hf_cache_dir=paths.hf_cache_dir,
    )
    embedder = make_embedder(
        cfg.backend,
        resolved,
        onnx_cache_dir=bundle_dir(paths),
        batch_size=cfg.batch_size,
        threads=cfg.threads,
        max_length=cfg.max_length,
        show_progress=show_progress,
        precision=cfg.precision,
    )
    info = {
        "model_id": resolved.model_id,
        "revision": resolved.revision,
        "source": resolved.source,
        "backend": cfg.backend,
        "max_length": cfg.max_length,
        "precision": cfg.precision,
        "dim": embedder.dim,
    }
    pinned = embedding_cache_key(resolved, cfg.backend, cfg.max_length, cfg.precision)
    if "weights_sha256" in pinned:
        info["weights_sha256"] = pinned["weights_sha256"]
    return embedder, info


def bundle_dir(paths: PathsSettings) -> Path:
    """Where ONNX bundles are cached: ``paths.onnx_cache_dir``, else per user (onnx_export)."""
    from financemath_mlops.features.onnx_export import bundle_cache_dir

    return bundle_cache_dir(paths.onnx_cache_dir, paths.cache_dir / "onnx")


def bundle_for(cfg: EmbeddingSettings, paths: PathsSettings, info: dict[str, Any]) -> Path:
    """The ONNX embedding bundle for the model the features were built with (exported if
    needed), the weights resolved as ``cfg`` says (revision, local folder) under ``paths``."""
    from financemath_mlops.features.onnx_export import ensure_onnx_bundle, weights_sha256
    from financemath_mlops.features.weights import resolve_weights

    resolved = resolve_weights(
        info["model_id"],
        revision=cfg.revision,
        local_path=cfg.local_path,
        hf_cache_dir=paths.hf_cache_dir,
    )
    if (resolved.revision, resolved.source) != (info["revision"], info["source"]):
        raise FeatureError(
            f"the features were embedded with {info['model_id']} revision {info['revision']} "
            f"({info['source']}) but this machine resolves revision {resolved.revision} "
            f"({resolved.source}); re-run the features stage"
        )
    if info.get("weights_sha256") and weights_sha256(resolved.path) != info["weights_sha256"]:
        raise FeatureError(
            f"the weights of {info['model_id']} at {resolved.path} changed since the features "
            "were embedded (sha256 differs); re-run the features stage"
        )
    return ensure_onnx_bundle(
        resolved,
        bundle_dir(paths),
        max_length=int(info["max_length"]),
        precision=str(info.get("precision", "fp32")),  # manifests from before precisions: fp32
    )


def build_features(
    cfg: FeatureSettings,
    paths: PathsSettings,
    source: Path,
    output: Path,
    *,
    show_progress: bool = True,
    validated_elsewhere: bool = False,
) -> FeatureSummary:
    """Run the features stage on the configured executor: the same table either way.

    Reads ``source`` (records), writes ``output`` (the table); the embedding model, its ONNX
    bundle and the embedding cache live under ``paths``. The caller slices the settings:
    ``build_features(s.features, s.paths, s.features_input, s.features_output)``.
    The input must be records ingestion wrote (its manifest beside them, checksum matching), or
    ``validated_elsewhere`` says the caller vouches for them (see :mod:`.lineage`).
    """
    if not source.is_file():
        raise FeatureError(
            f"features input not found: {source}; run `python -m financemath_mlops.ingestion` "
            "first or pass --input"
        )
    if source.stat().st_size == 0:
        raise FeatureError(f"features input is empty: {source}")
    records, data = records_provenance(source, validated_elsewhere)
    started = time.perf_counter()
    on_dask = cfg.executor == "dask"
    if on_dask:  # resolve and export the model once, here: workers only load a ready bundle
        embed_cfg = cfg.embedding.model_copy(update={"threads": cfg.embedding.threads or 1})
        embedder, info = embedder_for(embed_cfg, paths)
        recipe = pickle.dumps(embedder)  # paths and options; it builds its session on load
        key = "embedder-" + hashlib.sha256(recipe).hexdigest()
        shared: Any = WorkerCached(key, functools.partial(pickle.loads, recipe))
    else:
        shared, info = embedder_for(cfg.embedding, paths, show_progress)
    task = functools.partial(featurize_chunk, info=info, cache_dir=paths.cache_dir / "embeddings")
    totals = dict.fromkeys(("rows", "labelled", "hits", "misses", "warnings"), 0)
    stats: dict[str, Any] = {}
    done: list[Partition] = []
    seen: set[str] = set()
    chunks = read_jsonl_chunks(records, cfg.partition_rows, shown=source)
    try:
        with (
            atomic_path(output, suffix=".parquet") as tmp,
            pq.ParquetWriter(tmp, output_schema()) as writer,
            contextlib.closing(map_in_order(cfg, task, chunks, shared, stats)) as results,
        ):
            for result in results:
                (table, counts), result.value = result.value, None
                _refuse_duplicate_ids(table.column(ID_COLUMN).to_pylist(), seen, source)
                writer.write_table(table)
                done.append(result)
                totals["rows"] += table.num_rows
                totals["labelled"] += table.num_rows - table.column(TARGET_COLUMN).null_count
                for name in ("hits", "misses", "warnings"):
                    totals[name] += counts[name]
                log.info(
                    "partition %d: %d rows on %s in %.1fs%s (%d rows done)",
                    result.index,
                    table.num_rows,
                    result.worker,
                    result.seconds,
                    " (model loaded)" if result.built else "",
                    totals["rows"],
                )
            if totals["rows"] == 0:
                raise FeatureError(f"features input has no records: {source}")
            manifest = columns_manifest(info, data, totals["rows"], totals["labelled"])
            writer.add_key_value_metadata({MANIFEST_KEY: json.dumps(manifest, allow_nan=False)})
    except ExecutorError as exc:
        error = FeatureError(str(exc))
        error.exit_code = exc.exit_code  # a lost cluster exits 1 (rerun it), a bad address 2
        raise error from None
    extra: dict[str, Any] = {}
    if on_dask:
        startup = stats["ready_at"] - started
        extra = {
            "executor": "dask",
            "dask_address": cfg.dask_address,
            "workers": stats["workers"],
            "partitions": len(done),
            "model_loads": model_loads(done),
            "startup_seconds": startup,
            "partitions_wall_seconds": time.perf_counter() - stats["ready_at"],
            "compute_seconds": sum(r.seconds for r in done),
        }
    summary = FeatureSummary(
        output=output,
        manifest=manifest,
        rows=totals["rows"],
        labelled=totals["labelled"],
        embedding=info,
        cache_hits=totals["hits"],
        cache_misses=totals["misses"],
        seconds=time.perf_counter() - started,
        table_warnings=totals["warnings"],
        extra=extra,
    )
    log.info("wrote %d feature rows to %s (%s executor)", summary.rows, output, cfg.executor)
    return summary


def _refuse_duplicate_ids(ids: list[str], seen: set[str], source: Path) -> None:
    """One row per question_id, across every chunk: training splits and joins by it."""
    for qid in ids:
        if qid in seen:
            raise FeatureError(
                f"{source}: question_id {qid!r} appears more than once; ingestion keeps the first "
                "and rejects the others: run `python -m financemath_mlops.ingestion --source "
                f"local --path {source}` and build from its output. Nothing was written."
            )
        seen.add(qid)


def columns_manifest(
    info: dict[str, Any], data: dict[str, Any], rows: int, labelled: int
) -> dict[str, Any]:
    """The table's manifest: the fixed column order, how embeddings were made, which records,
    how many rows. Training logs it to its run as `feature_columns.json` (the run contract)."""
    return {
        "feature_version": FEATURE_VERSION,
        "id_column": ID_COLUMN,
        "topic_column": TOPIC_COLUMN,
        "target_column": TARGET_COLUMN,
        "columns": list(FEATURE_COLUMNS),
        "embedding": info,
        "data": data,
        "rows": rows,
        "labelled": labelled,
    }


def read_feature_manifest(path: Path) -> dict[str, Any]:
    """The manifest a feature table carries (:data:`MANIFEST_KEY` of its Parquet metadata).

    A table without one was built before tables carried their manifest, or rewritten by another
    tool (which drops it): either way nothing says how its rows were embedded, so it is refused,
    and a `feature_columns.json` beside it is named but never trusted (it was one per folder,
    the last table built there).
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureError(
            f"feature table not found: {path}; run `python -m financemath_mlops.features` first"
        )
    try:
        metadata = pq.ParquetFile(path).metadata.metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise FeatureError(f"{path} is not a Parquet feature table ({exc})") from None
    raw = metadata.get(MANIFEST_KEY.encode())
    if raw is None:
        legacy = path.with_name(LEGACY_COLUMNS_FILE)
        beside = (
            f"; {legacy} beside it is the manifest of whichever table was built last in "
            f"{path.parent}, not necessarily of {path.name}, and is not used"
            if legacy.is_file()
            else ""
        )
        raise FeatureError(
            f"{path} carries no features manifest (key {MANIFEST_KEY!r} of its Parquet metadata):"
            f" it was built by an older version of the features stage or rewritten by another "
            f"tool{beside}. Re-run `python -m financemath_mlops.features --output {path}`"
        )
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise FeatureError(f"the features manifest inside {path} is not JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("columns"), list):
        raise FeatureError(f"the features manifest inside {path} has no column list")
    return manifest


def read_features(path: Path) -> tuple[Any, dict[str, Any]]:
    """Load a feature table and check it against the manifest it carries: columns and their
    order, the feature version of this code, the row count, one row per question_id."""
    import pandas as pd

    manifest = read_feature_manifest(path)
    frame: pd.DataFrame = pd.read_parquet(path)
    expected = [ID_COLUMN, TOPIC_COLUMN, TARGET_COLUMN, *manifest["columns"]]
    if list(frame.columns) != expected:
        missing = [c for c in expected if c not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        raise FeatureError(
            f"{path} does not match its manifest: missing {missing[:5]}, unexpected "
            f"{extra[:5]}{' (order differs)' if not missing and not extra else ''}; "
            "re-run the features stage"
        )
    if manifest["columns"] != list(FEATURE_COLUMNS):
        raise FeatureError(
            f"{path} was built by feature version {manifest.get('feature_version')} with other "
            f"columns than this code (version {FEATURE_VERSION}); re-run the features stage"
        )
    if str(manifest.get("feature_version")) != str(FEATURE_VERSION):
        # Same columns, other meaning: a model trained on it would be refused when served.
        raise FeatureError(
            f"{path} was built by feature version {manifest.get('feature_version')}, this code "
            f"builds version {FEATURE_VERSION} (same columns, other values: docs/features.md); "
            f"re-run `python -m financemath_mlops.features --output {path}`"
        )
    if manifest.get("rows") != len(frame):
        raise FeatureError(
            f"{path} holds {len(frame)} rows but its manifest describes {manifest.get('rows')}: "
            "the manifest belongs to another table; re-run the features stage"
        )
    repeated = frame[ID_COLUMN][frame[ID_COLUMN].duplicated()].unique().tolist()
    if repeated:
        raise FeatureError(
            f"{path} holds {len(repeated)} question_ids more than once (e.g. {repeated[:3]}): "
            "re-run the features stage on ingested records"
        )
    return frame, manifest


def feature_values(frame: Any) -> np.ndarray:
    return frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
