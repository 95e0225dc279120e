"""Run predictions off the event loop, on a thread pool sized to the cores.

Predicting is CPU-bound (tokenizer, ONNX embedder, booster), so it runs on worker threads, never
on the event loop. By default the pool has one worker per core and the model two ONNX sessions:
a call that runs alone uses the session with every core (lowest latency at low load), a call that
overlaps another uses a single-threaded one (no oversubscription, the most throughput under load).
With ``serving.inference_threads`` set, every call uses that many threads and the pool has
``cores // threads`` workers. A call whose client has gone (``gone`` is set) is dropped before it
starts, so abandoned requests do not delay the ones still waiting.

Measured and not kept (see benchmarks/serving.py): merging waiting requests into one embedding
call (padding to the longest question cost more than the per-call overhead it saved), one
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


MAX_ITEM_WARNINGS = 20  # per item in a response; the tables of one item may hold many more


class ClientGone(Exception):
    """The request was abandoned before its prediction started."""


class InferencePool:
    """Predictions on worker threads, with the model-call metrics."""

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
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._predict, model, list(records), keep_features, gone
        )

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    def _predict(
        self,
        model: LoadedModel,
        records: list[RecordInput],
        keep_features: bool,
        gone: threading.Event | None,
    ) -> ScoredRecords:
        if gone is not None and gone.is_set():
            raise ClientGone
        with self._lock:
            self._running += 1
            alone = self._running == 1
        try:
            predictor = model.predictor if alone else model.concurrent_predictor or model.predictor
            prediction = predictor.predict(records, keep_features=keep_features)
        finally:
            with self._lock:
                self._running -= 1
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
