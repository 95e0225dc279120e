"""The features stage: ingested JSONL -> `finance_math_features.parquet` + `feature_columns.json`.

Streams the input in chunks and writes one Parquet row group per chunk, so memory stays flat as
the data grows. Embeddings come from the configured backend through an on-disk cache keyed by
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

from financemath_mlops.atomic import atomic_path, file_sha256, write_json
from financemath_mlops.config import EmbeddingSettings, Settings
from financemath_mlops.errors import StageError
from financemath_mlops.executors import (
    ExecutorError,
    Partition,
    WorkerCached,
    map_in_order,
    model_loads,
)
from financemath_mlops.features.rows import FEATURE_COLUMNS, FEATURE_VERSION, feature_matrix
from financemath_mlops.records import RecordInput

log = logging.getLogger(__name__)

ID_COLUMN = "question_id"
TOPIC_COLUMN = "topic"
TARGET_COLUMN = "target"
COLUMNS_FILE = "feature_columns.json"


class FeatureError(StageError):
    """Bad input for the features stage; nothing is written."""


@dataclass
class FeatureSummary:
    output: Path
    columns_path: Path
    rows: int
    labelled: int
    embedding: dict[str, Any]
    cache_hits: int = 0
    cache_misses: int = 0
    seconds: float = 0.0
    table_warnings: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        return "\n".join(
            [
                f"features: {self.rows} rows ({self.labelled} labelled) x "
                f"{len(FEATURE_COLUMNS)} features in {self.seconds:.1f}s",
                f"  output:     {self.output}",
                f"  columns:    {self.columns_path}",
                f"  embeddings: {self.embedding['backend']} {self.embedding['model_id']} "
                f"({self.embedding['source']}, revision {self.embedding['revision']}); "
                f"cache hits {self.cache_hits}, computed {self.cache_misses}",
            ]
        )


def columns_path_for(features_path: Path) -> Path:
    return features_path.with_name(COLUMNS_FILE)


def output_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field(ID_COLUMN, pa.string()),
            pa.field(TOPIC_COLUMN, pa.string()),
            pa.field(TARGET_COLUMN, pa.float64()),
            *(pa.field(name, pa.float64()) for name in FEATURE_COLUMNS),
        ]
    )


def read_jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[list[dict[str, Any]]]:
    """Yield lists of ingested records; a malformed line is an error naming the line."""
    with path.open(encoding="utf-8") as handle:
        rows = (_ingested(path, n, line) for n, line in enumerate(handle, 1) if line.strip())
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


def load_embedder(cfg: EmbeddingSettings, settings: Settings, show_progress: bool = False):
    """Resolve the model weights and build the configured embedding backend."""
    from financemath_mlops.features.embeddings import embedding_cache_key, make_embedder
    from financemath_mlops.features.weights import resolve_weights

    resolved = resolve_weights(
        cfg.model_id,
        revision=cfg.revision,
        local_path=cfg.local_path,
        hf_cache_dir=settings.paths.hf_cache_dir,
    )
    embedder = make_embedder(
        cfg.backend,
        resolved,
        onnx_cache_dir=settings.paths.cache_dir / "onnx",
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


def onnx_bundle(settings: Settings, info: dict[str, Any]) -> Path:
    """The ONNX embedding bundle for the model the features were built with (exported if needed)."""
    from financemath_mlops.features.onnx_export import ensure_onnx_bundle, weights_sha256
    from financemath_mlops.features.weights import resolve_weights

    cfg = settings.features.embedding
    resolved = resolve_weights(
        info["model_id"],
        revision=cfg.revision,
        local_path=cfg.local_path,
        hf_cache_dir=settings.paths.hf_cache_dir,
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
        settings.paths.cache_dir / "onnx",
        max_length=int(info["max_length"]),
        precision=str(info.get("precision", "fp32")),  # manifests from before precisions: fp32
    )


def data_provenance(source: Path) -> dict[str, Any]:
    """Where the ingested records came from (the first record's metadata), and which file exactly
    (path and sha256: training reads the same records back and refuses a changed file)."""
    exact = {"input": str(source), "input_sha256": file_sha256(source)}
    for chunk in read_jsonl_chunks(source, 1):
        meta = dict(chunk[0].get("meta") or {})
        meta.pop("ingested_at", None)
        return {**meta, **exact}
    return exact


def build_features(settings: Settings, show_progress: bool = True) -> FeatureSummary:
    """Run the features stage on the configured executor: the same table either way."""
    cfg = settings.features
    source, output = settings.features_input, settings.features_output
    if not source.is_file():
        raise FeatureError(
            f"features input not found: {source}; run `python -m financemath_mlops.ingestion` "
            "first or pass --input"
        )
    if source.stat().st_size == 0:
        raise FeatureError(f"features input is empty: {source}")
    started = time.perf_counter()
    on_dask = cfg.executor == "dask"
    if on_dask:  # resolve and export the model once, here: workers only load a ready bundle
        embed_cfg = cfg.embedding.model_copy(update={"threads": cfg.embedding.threads or 1})
        embedder, info = load_embedder(embed_cfg, settings)
        recipe = pickle.dumps(embedder)  # paths and options; it builds its session on load
        key = "embedder-" + hashlib.sha256(recipe).hexdigest()
        shared: Any = WorkerCached(key, functools.partial(pickle.loads, recipe))
    else:
        shared, info = load_embedder(cfg.embedding, settings, show_progress)
    task = functools.partial(
        featurize_chunk, info=info, cache_dir=settings.paths.cache_dir / "embeddings"
    )
    totals = dict.fromkeys(("rows", "labelled", "hits", "misses", "warnings"), 0)
    stats: dict[str, Any] = {}
    done: list[Partition] = []
    chunks = read_jsonl_chunks(source, cfg.partition_rows)
    try:
        with (
            atomic_path(output, suffix=".parquet") as tmp,
            pq.ParquetWriter(tmp, output_schema()) as writer,
            contextlib.closing(map_in_order(cfg, task, chunks, shared, stats)) as results,
        ):
            for result in results:
                (table, counts), result.value = result.value, None
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
    except ExecutorError as exc:
        raise FeatureError(str(exc)) from None
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
    summary = finish_features(output, source, info, totals, started, extra)
    log.info("wrote %d feature rows to %s (%s executor)", summary.rows, output, cfg.executor)
    return summary


def finish_features(
    output: Path,
    source: Path,
    info: dict[str, Any],
    totals: dict[str, int],
    started: float,
    extra: dict[str, Any] | None = None,
) -> FeatureSummary:
    """Write `feature_columns.json` beside the output and summarise the run (every executor)."""  # fmt: skip
    columns_path = columns_path_for(output)
    write_json(columns_path, columns_manifest(info, data_provenance(source)))
    return FeatureSummary(
        output=output,
        columns_path=columns_path,
        rows=totals["rows"],
        labelled=totals["labelled"],
        embedding=info,
        cache_hits=totals["hits"],
        cache_misses=totals["misses"],
        seconds=time.perf_counter() - started,
        table_warnings=totals["warnings"],
        extra=extra or {},
    )


def columns_manifest(info: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """`feature_columns.json`: the fixed column order, how embeddings were made, the data source."""
    return {
        "feature_version": FEATURE_VERSION,
        "id_column": ID_COLUMN,
        "topic_column": TOPIC_COLUMN,
        "target_column": TARGET_COLUMN,
        "columns": list(FEATURE_COLUMNS),
        "embedding": info,
        "data": data,
    }


def read_features(path: Path) -> tuple[Any, dict[str, Any]]:
    """Load a feature table and check it against the `feature_columns.json` beside it."""
    import pandas as pd

    if not Path(path).is_file():
        raise FeatureError(
            f"feature table not found: {path}; run `python -m financemath_mlops.features` first"
        )
    columns_path = columns_path_for(Path(path))
    if not columns_path.is_file():
        raise FeatureError(f"{columns_path} is missing: re-run the features stage")
    manifest = json.loads(columns_path.read_text(encoding="utf-8"))
    frame: pd.DataFrame = pd.read_parquet(path)
    expected = [ID_COLUMN, TOPIC_COLUMN, TARGET_COLUMN, *manifest["columns"]]
    if list(frame.columns) != expected:
        missing = [c for c in expected if c not in frame.columns]
        extra = [c for c in frame.columns if c not in expected]
        raise FeatureError(
            f"{path} does not match {columns_path}: missing {missing[:5]}, unexpected "
            f"{extra[:5]}{' (order differs)' if not missing and not extra else ''}; "
            "re-run the features stage"
        )
    if manifest["columns"] != list(FEATURE_COLUMNS):
        raise FeatureError(
            f"{path} was built by feature version {manifest.get('feature_version')} with other "
            f"columns than this code (version {FEATURE_VERSION}); re-run the features stage"
        )
    return frame, manifest


def feature_values(frame: Any) -> np.ndarray:
    return frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float64)
