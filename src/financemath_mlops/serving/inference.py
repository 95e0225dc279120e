"""Run predictions off the event loop, merging requests that wait into one model call.

Predicting is CPU-bound (tokenizer, ONNX embedder, booster), so it runs on a small thread pool
sized to the cores, never on the event loop. Requests that arrive while every worker is busy
wait in a queue; when a worker frees up it takes everything waiting (up to ``max_records``) and
embeds it in one call. At low load nothing waits, so a lone request pays no batching delay; under
load the per-record cost drops, which is where throughput comes from.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from financemath_mlops.features.rows import TOPICS, RecordInput
from financemath_mlops.serving.model_holder import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class ScoredRecords:
    """Predictions for one request's records (values may be None where non-finite)."""

    values: list[float | None]
    warnings: list[list[str]]
    features: np.ndarray | None = None


@dataclass
class _Job:
    model: LoadedModel
    records: list[RecordInput]
    future: asyncio.Future[ScoredRecords]
    keep_features: bool = False
    queued_at: float = field(default_factory=time.perf_counter)


class InferenceQueue:
    """A thread pool plus a queue that batches waiting requests per model."""

    def __init__(self, workers: int, max_records: int = 64, metrics: Any = None) -> None:
        self.workers = max(1, workers)
        self.max_records = max(1, max_records)
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="fmops-predict")
        self._pending: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.workers)
        self._dispatcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the service is shutting down"))
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def predict(
        self, model: LoadedModel, records: Sequence[RecordInput], keep_features: bool = False
    ) -> ScoredRecords:
        future: asyncio.Future[ScoredRecords] = asyncio.get_running_loop().create_future()
        self._pending.append(_Job(model, list(records), future, keep_features))
        self._wakeup.set()
        return await future

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            batch = self._take_batch()
            if not batch:
                self._slots.release()
                continue
            try:
                done = loop.run_in_executor(self._executor, self._score, batch)
            except RuntimeError as exc:  # executor already shut down
                self._slots.release()
                _fail(batch, exc)
                continue
            done.add_done_callback(lambda fut, jobs=batch: self._finish(jobs, fut))

    def _take_batch(self) -> list[_Job]:
        """Waiting jobs for the first job's model, up to max_records (at least one job)."""
        batch: list[_Job] = []
        size = 0
        skipped: list[_Job] = []
        while self._pending:
            job = self._pending.popleft()
            if job.future.done():  # the client went away
                continue
            if batch and (job.model is not batch[0].model or job.keep_features):
                skipped.append(job)
                continue
            if batch and size + len(job.records) > self.max_records:
                skipped.append(job)
                break
            batch.append(job)
            size += len(job.records)
            if job.keep_features:
                break
        self._pending.extendleft(reversed(skipped))
        return batch

    def _finish(self, batch: list[_Job], done: asyncio.Future[list[Any]]) -> None:
        self._slots.release()
        try:
            results = done.result()
        except BaseException as exc:  # the whole call failed (e.g. shutdown)
            _fail(batch, exc)
            return
        for job, result in zip(batch, results, strict=True):
            if job.future.done():
                continue
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    # --- on a worker thread -----------------------------------------------------------------

    def _score(self, batch: list[_Job]) -> list[ScoredRecords | BaseException]:
        records = [r for job in batch for r in job.records]
        try:
            scored = self._predict(batch[0].model, records, batch[0].keep_features)
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            # One odd input must not fail its neighbours: score each request on its own.
            return [self._score([job])[0] for job in batch]
        out: list[ScoredRecords | BaseException] = []
        start = 0
        for job in batch:
            end = start + len(job.records)
            out.append(ScoredRecords(scored.values[start:end], scored.warnings[start:end]))
            start = end
        if batch[0].keep_features:
            out[0] = scored
        return out

    def _predict(
        self, model: LoadedModel, records: list[RecordInput], keep_features: bool
    ) -> ScoredRecords:
        prediction = model.predictor.predict(records, keep_features=keep_features)
        values: list[float | None] = []
        warnings = [list(w) for w in prediction.warnings]
        for value, record, notes in zip(prediction.values, records, warnings, strict=True):
            value = float(value)
            if math.isfinite(value):
                values.append(value)
            else:
                values.append(None)
                notes.append("the model produced a non-finite value")
            if record.topic is not None and record.topic not in TOPICS:
                notes.append(f"unknown topic {record.topic[:40]!r}; scored as 'other'")
        if self.metrics is not None:
            self.metrics.embedding_latency.observe(prediction.embed_seconds)
            self.metrics.inference_latency.observe(prediction.inference_seconds)
            self.metrics.batch_size.observe(len(records))
            for value in values:
                if value is not None:
                    self.metrics.prediction_value.observe(value)
        return ScoredRecords(values, warnings, prediction.features)


def _fail(batch: list[_Job], exc: BaseException) -> None:
    for job in batch:
        if not job.future.done():
            job.future.set_exception(exc)
