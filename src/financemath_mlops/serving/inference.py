"""Run predictions off the event loop, on a thread pool sized to the cores.

Predicting is CPU-bound (tokenizer, ONNX embedder, booster), so it runs on worker threads, never
on the event loop. By default the pool has one worker more than the cores (:func:`adaptive_workers`)
and the model two ONNX sessions: a call that runs alone uses the session with every core (lowest
latency at low load), a call that overlaps another uses a single-threaded one (the most throughput
under load).
With ``serving.inference_threads`` set, every call uses that many threads and the pool has
``cores // threads`` workers. A request runs as chunks of a few records, each its own job, so a
batch gives way to whatever waits after every chunk, and a request whose client has gone (``gone``
set) stops at its next chunk: abandoned work neither delays the requests still waiting nor holds
a worker to the end.

Measured and not kept (see benchmarks/serving.py): merging waiting requests into one embedding
call (padding to the longest question cost more than the per-call overhead it saved; grouped
by length, 4-7 % less CPU a question at best: docs/performance.md), one
all-core worker (lone-call latency as now, but a third less throughput under load) and only
single-threaded workers (as much throughput, but 1.4x the latency of a lone call).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from financemath_mlops.model.postprocess import finish_predictions
from financemath_mlops.model.predictor import Prediction
from financemath_mlops.records import RecordInput
from financemath_mlops.serving.model_holder import LoadedModel


@dataclass
class ScoredRecords:
    """Predictions for one request's records (None where the model gave a non-finite value)."""

    values: list[float | None]
    warnings: list[list[str]]
    features: np.ndarray | None = None


def pool_size(cores: int, threads_per_call: int) -> int:
    """Workers such that workers x ONNX threads per call <= cores (at least one)."""
    return max(1, cores // max(1, threads_per_call))


def adaptive_workers(cores: int) -> int:
    """One single-threaded worker per core, and one more. Between two ONNX calls a worker runs
    Python and needs the GIL; while the event loop holds it (a few ms at a time under load) a
    core with no third call to run sits idle: 5.8 % idle against the in-process ceiling's 2.4 %
    at c=32 on 2 cores. The spare worker runs its ONNX call there: c=32 requests/s 82 % -> 88 %
    of the ceiling (medians of 7 paired 12-s runs, issue 32); a lone call is unchanged."""
    return cores + 1


MAX_ITEM_WARNINGS = 20  # per item in a response; the tables of one item may hold many more
# A chunk: what a worker predicts before it gives way to requests queued meanwhile. At most 4
# records and 2,000 characters of question + tables (a longer record runs alone). Measured by
# benchmarks/chunks.py (CPU of one core): the largest chunk of a 64-row validation batch ~0.1 s,
# of the attack's ragged-table batch ~15 ms; the validation batches cost 0.46-0.60x the CPU of one
# call in chunks (less padding), 64 copies of a short question 1.03x, the ragged batch 1.45x.
CHUNK_RECORDS = 4
CHUNK_CHARS = 2_000


class ClientGone(Exception):
    """The request was abandoned before its prediction finished; its result is not wanted."""


class InferencePool:
    """Predictions on worker threads, chunk by chunk, with the model-call metrics."""

    def __init__(self, workers: int, metrics: Any = None) -> None:
        self.workers = max(1, workers)
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="fmops-predict")
        self._running = 0
        self._lock = threading.Lock()

    async def predict(
        self,
        model: LoadedModel,
        records: Sequence[RecordInput],
        keep_features: bool = False,
        gone: threading.Event | None = None,
    ) -> ScoredRecords:
        """Score ``records`` in chunks (:func:`record_chunks`), each chunk its own job.

        Between two chunks a worker takes whatever was queued meanwhile (first come, first
        served), so a lone /predict waits for one chunk of a batch, not for all of it. A request
        abandoned meanwhile (``gone`` set, or this coroutine cancelled) stops there: its later
        chunks never run, and the pool counts it (``fmops_predictions_cancelled_total``).
        """
        records = list(records)
        loop = asyncio.get_running_loop()
        chunks = record_chunks(records)
        started: list[int] = []  # sizes of the chunks a worker took up
        parts: list[Prediction] = []
        try:
            for rows in chunks:
                chunk = [records[i] for i in rows]
                parts.append(
                    await loop.run_in_executor(
                        self._executor, self._predict, model, chunk, keep_features, gone, started
                    )
                )
        except (ClientGone, asyncio.CancelledError):
            self._cancelled("running" if started else "queued", len(records) - sum(started))
            raise
        return self._scored(records, [i for rows in chunks for i in rows], parts)

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    def _predict(
        self,
        model: LoadedModel,
        records: list[RecordInput],
        keep_features: bool,
        gone: threading.Event | None,
        started: list[int],
    ) -> Prediction:
        """One chunk, on a worker thread; nothing at all if its client has gone meanwhile."""
        if gone is not None and gone.is_set():
            raise ClientGone
        started.append(len(records))
        with self._lock:
            self._running += 1
            alone = self._running == 1
        if self.metrics is not None:
            self.metrics.inference_running.inc()
        try:
            predictor = model.predictor if alone else model.concurrent_predictor or model.predictor
            return predictor.predict(records, keep_features=keep_features)
        finally:
            with self._lock:
                self._running -= 1
            if self.metrics is not None:
                self.metrics.inference_running.dec()

    def _scored(
        self, records: list[RecordInput], order: list[int], parts: list[Prediction]
    ) -> ScoredRecords:
        """The chunks' predictions back in request order, checked, with the model-call metrics."""
        prediction = _in_order(order, parts)
        values, warnings = finish_predictions(
            prediction.values, [r.topic for r in records], prediction.warnings, MAX_ITEM_WARNINGS
        )
        if self.metrics is not None:
            self.metrics.embedding_latency.observe(prediction.embed_seconds)
            self.metrics.inference_latency.observe(prediction.inference_seconds)
            self.metrics.batch_size.observe(len(records))
            for value in values:
                if value is not None:
                    self.metrics.prediction_value.observe(value)
        return ScoredRecords(values, warnings, prediction.features)

    def _cancelled(self, when: str, skipped: int) -> None:
        if self.metrics is not None:
            self.metrics.cancelled.labels(when).inc()
            self.metrics.cancelled_records.inc(skipped)


def record_chunks(
    records: Sequence[RecordInput], max_records: int = CHUNK_RECORDS, max_chars: int = CHUNK_CHARS
) -> list[list[int]]:
    """Indices of ``records`` in chunks of at most ``max_records`` records and ``max_chars``
    characters (a larger record alone), longest question first: the questions embedded
    together need little padding."""
    order = sorted(range(len(records)), key=lambda i: -len(records[i].question))
    chunks: list[list[int]] = []
    chunk: list[int] = []
    chars = 0
    for index in order:
        size = len(records[index].question) + sum(len(t) for t in records[index].tables)
        if chunk and (len(chunk) == max_records or chars + size > max_chars):
            chunks.append(chunk)
            chunk, chars = [], 0
        chunk.append(index)
        chars += size
    return [*chunks, chunk] if chunk else chunks


def _in_order(order: list[int], parts: list[Prediction]) -> Prediction:
    """One prediction from the chunks' (taken in ``order``), rows back at their indices."""
    if len(parts) == 1 and order == [0]:
        return parts[0]
    values = np.empty(len(order), dtype=np.float64)
    values[order] = np.concatenate([part.values for part in parts])
    warnings: list[list[str]] = [[] for _ in order]
    for index, notes in zip(order, (n for part in parts for n in part.warnings), strict=True):
        warnings[index] = notes
    features = None
    if all(part.features is not None for part in parts):
        rows = np.vstack([part.features for part in parts])
        features = np.empty_like(rows)
        features[order] = rows
    return Prediction(
        values=values,
        warnings=warnings,
        embed_seconds=sum(part.embed_seconds for part in parts),
        inference_seconds=sum(part.inference_seconds for part in parts),
        features=features,
    )
