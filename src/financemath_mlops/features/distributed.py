"""The features stage on a Dask cluster: the same Parquet table and manifest as the local executor.

The client streams the ingested JSONL in partitions of ``features.partition_rows`` and keeps at
most two partitions per worker thread in flight, so neither it nor the scheduler ever holds the
whole input or its embeddings. Each worker builds the embedding model once (a per-process cache
keyed by the model recipe, one compute thread per worker unless ``embedding.threads`` says
otherwise), featurizes its partition with the same :func:`featurize_chunk` as the local path and
writes it to a temporary folder beside the output. The client then concatenates the partition
files in input order into the output, atomically. A ``tcp://`` cluster therefore needs the output
folder (and the embedding cache) on a filesystem its workers share with the client.

Dask is called with plain functions (``client.submit``), never through Prefect's Dask task runner:
that runner makes every worker process start its own temporary Prefect server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from financemath_mlops.atomic import atomic_path
from financemath_mlops.config import Settings
from financemath_mlops.features.build import (
    TARGET_COLUMN,
    FeatureError,
    FeatureSummary,
    featurize_chunk,
    finish_features,
    load_embedder,
    output_schema,
    read_jsonl_chunks,
)

log = logging.getLogger(__name__)

LOCAL_CLUSTER = "local-cluster"
IN_FLIGHT_PER_THREAD = 2
CONNECT_TIMEOUT_S = 20

# Per worker process: key -> model built once (see worker_cached).
_MODELS: dict[str, Any] = {}
_MODELS_LOCK = threading.Lock()


@contextlib.contextmanager
def dask_client(address: str, workers: int) -> Iterator[Any]:
    """A Dask client: on a fresh LocalCluster (closed afterwards) or on a running scheduler.

    ``local-cluster`` starts ``workers`` worker processes with one thread each on 127.0.0.1 and
    no dashboard; any ``scheme://host:port`` address connects to that scheduler instead.
    """
    with quiet_dask_logs():
        yield from _client(address, workers)


@contextlib.contextmanager
def quiet_dask_logs() -> Iterator[None]:
    """Dask's INFO chatter (connections, nannies) would drown the stage's story; DEBUG keeps it."""
    import distributed  # its import sets the level we override (from Dask's logging config)

    logger = logging.getLogger(distributed.__name__)
    previous = logger.level
    if not log.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _client(address: str, workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if address == LOCAL_CLUSTER:
        started = time.perf_counter()
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            log.info(
                "Dask LocalCluster up in %.1fs: %d worker processes x 1 thread (scheduler %s)",
                time.perf_counter() - started,
                workers,
                cluster.scheduler_address,
            )
            yield client
        return
    if "://" not in address:
        raise FeatureError(
            f"features.dask_address {address!r} is neither 'local-cluster' nor a scheduler "
            "address like tcp://host:8786"
        )
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise FeatureError(
            f"cannot reach the Dask scheduler at {address} ({type(exc).__name__}: {exc}); start "
            "one (`dask scheduler` and `dask worker <address>`) or use --dask-address local-cluster"
        ) from None
    with client:
        log.info("connected to the Dask scheduler %s (%d threads)", address, total_threads(client))
        yield client


def total_threads(client: Any) -> int:
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))


def worker_cached(key: str, build: Callable[[], Any]) -> tuple[Any, bool]:
    """``build()`` once per worker process and ``key``; returns (object, built by this call).

    Dask runs many tasks in one worker process: keeping the loaded model here is what makes each
    worker load it once instead of once per partition.
    """
    with _MODELS_LOCK:
        model = _MODELS.get(key)
        if model is not None:
            return model, False
        model = build()
        _MODELS[key] = model
        return model, True


def worker_embedder(recipe: bytes) -> tuple[Any, bool]:
    """The embedder pickled in ``recipe`` (paths and options; it builds its session on load)."""
    digest = "embedder-" + hashlib.sha256(recipe).hexdigest()
    return worker_cached(digest, lambda: pickle.loads(recipe))


def worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not on a Dask worker (called in-process)
        return f"pid-{os.getpid()}"


def featurize_partition(
    index: int,
    rows: list[dict[str, Any]],
    recipe: bytes,
    info: dict[str, Any],
    cache_dir: str | None,
    parts_dir: str,
) -> dict[str, Any]:
    """Dask task: featurize one partition and write it as ``part-<index>.parquet``."""
    started = time.perf_counter()
    embedder, built = worker_embedder(recipe)
    table, stats = featurize_chunk(rows, embedder, info, Path(cache_dir) if cache_dir else None)
    path = Path(parts_dir) / f"part-{index:06d}.parquet"
    pq.write_table(table, path)
    return {
        "index": index,
        "path": str(path),
        "rows": table.num_rows,
        "labelled": table.num_rows - table.column(TARGET_COLUMN).null_count,
        "worker": worker_name(),
        "model_loaded": built,
        "seconds": time.perf_counter() - started,
        **stats,
    }


def run_partitions(
    client: Any, chunks: Iterator[tuple[Any, ...]], submit: Any, on_done: Any
) -> None:
    """Submit ``submit(client, *chunk)`` for each chunk with a bounded number in flight.

    ``on_done(result)`` sees results as they complete (any order). A failed task cancels the
    rest and re-raises its error.
    """
    from distributed import as_completed

    window = IN_FLIGHT_PER_THREAD * total_threads(client)
    running = as_completed()

    def submit_next() -> bool:
        chunk = next(chunks, None)
        if chunk is None:
            return False
        running.add(submit(client, *chunk))
        return True

    for _ in range(window):
        if not submit_next():
            break
    try:
        for future in running:
            on_done(future.result())
            submit_next()
    except BaseException:
        running.clear()
        raise


def build_features_dask(settings: Settings) -> FeatureSummary:
    """Run the features stage on the configured Dask cluster (see the module docstring)."""
    cfg = settings.features
    source, output = settings.features_input, settings.features_output
    started = time.perf_counter()
    # Resolve and export the model once, here, so workers only load a ready bundle.
    worker_cfg = cfg.embedding.model_copy(update={"threads": cfg.embedding.threads or 1})
    embedder, info = load_embedder(worker_cfg, settings)
    recipe = pickle.dumps(embedder)
    del embedder
    cache_dir = str(settings.paths.cache_dir / "embeddings")
    output.parent.mkdir(parents=True, exist_ok=True)
    parts_dir = tempfile.mkdtemp(prefix=f".{output.name}.parts-", dir=output.parent)
    token = uuid.uuid4().hex[:12]
    results: dict[int, dict[str, Any]] = {}
    totals = {"rows": 0, "labelled": 0, "hits": 0, "misses": 0, "warnings": 0}

    def submit(client: Any, index: int, rows: list[dict[str, Any]]) -> Any:
        return client.submit(
            featurize_partition,
            index,
            rows,
            recipe,
            info,
            cache_dir,
            parts_dir,
            key=f"featurize-{token}-{index}",
            pure=False,
        )

    def on_done(result: dict[str, Any]) -> None:
        results[result["index"]] = result
        for key in totals:
            totals[key] += result[key]
        log.info(
            "partition %d: %d rows on %s in %.1fs%s (%d rows done)",
            result["index"],
            result["rows"],
            result["worker"],
            result["seconds"],
            " (model loaded)" if result["model_loaded"] else "",
            totals["rows"],
        )

    try:
        with dask_client(cfg.dask_address, cfg.dask_workers) as client:
            ready = time.perf_counter() - started  # model resolved, cluster up
            chunks = enumerate(read_jsonl_chunks(source, cfg.partition_rows))
            run_partitions(client, chunks, submit, on_done)
            partitions_wall = time.perf_counter() - started - ready
            workers = len(client.scheduler_info().get("workers", {}))
        if totals["rows"] == 0:
            raise FeatureError(f"features input has no records: {source}")
        with (
            atomic_path(output, suffix=".parquet") as tmp,
            pq.ParquetWriter(tmp, output_schema()) as writer,
        ):
            for index in sorted(results):  # input order, one partition in memory at a time
                writer.write_table(pq.read_table(results[index]["path"]))
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
    loads: dict[str, int] = {}
    for result in results.values():
        loads[result["worker"]] = loads.get(result["worker"], 0) + int(result["model_loaded"])
    summary = finish_features(
        output,
        source,
        info,
        totals,
        started,
        extra={
            "executor": "dask",
            "dask_address": cfg.dask_address,
            "workers": workers,
            "partitions": len(results),
            "model_loads": loads,
            "startup_seconds": ready,
            "partitions_wall_seconds": partitions_wall,
            "compute_seconds": sum(r["seconds"] for r in results.values()),
        },
    )
    log.info(
        "wrote %d feature rows to %s (%d partitions on %d Dask workers)",
        summary.rows,
        output,
        len(results),
        workers,
    )
    return summary
