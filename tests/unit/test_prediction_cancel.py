"""Chunked predictions on the pool (issue 12): a batch gives way between chunks, abandoned work stops.

The pool runs a request as chunks of CHUNK_RECORDS records, each its own job: work queued
meanwhile goes first, and a request whose client has gone stops at its next chunk and is counted.
Counted in predictor calls and records, never in seconds.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import numpy as np
import pytest

from financemath_mlops.model.predictor import Prediction
from financemath_mlops.records import RecordInput
from financemath_mlops.serving.inference import (
    CHUNK_CHARS,
    CHUNK_RECORDS,
    ClientGone,
    InferencePool,
    record_chunks,
)
from financemath_mlops.serving.metrics import ServiceMetrics
from financemath_mlops.serving.model_holder import LoadedModel

BATCH = 64


class CountingPredictor:
    """Predicts len(question) (features: [len, index]); records each call's questions.

    ``on_call(n)`` runs at the start of the n-th call: e.g. a disconnect arriving mid-batch.
    """

    def __init__(self, on_call=None) -> None:
        self.calls: list[list[str]] = []
        self.on_call = on_call

    def predict(self, records, keep_features=False):
        self.calls.append([r.question for r in records])
        if self.on_call is not None:
            self.on_call(len(self.calls))
        values = np.array([len(r.question) for r in records], dtype=float)
        features = np.array([[len(r.question), int(r.question.split()[1])] for r in records])
        return Prediction(
            values=values,
            warnings=[[f"note {r.question.split()[1]}"] for r in records],
            features=features.astype(float) if keep_features else None,
        )


def records(n: int = BATCH) -> list[RecordInput]:
    return [RecordInput(f"question {i} " + "word " * (i % 7)) for i in range(n)]


def _model(predictor) -> LoadedModel:
    return LoadedModel(
        None, predictor, "models:/m/1", datetime.now(UTC), {}
    )  # the pool needs no ref


def _predict(predictor, metrics=None, gone=None, workers=1, keep=False):
    async def scenario():
        pool = InferencePool(workers=workers, metrics=metrics)
        try:
            return await pool.predict(_model(predictor), records(), keep, gone)
        finally:
            await pool.stop()

    return asyncio.run(scenario())


def _value(metrics: ServiceMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_batch_runs_as_chunks_and_comes_back_in_request_order() -> None:
    predictor = CountingPredictor()
    scored = _predict(predictor, keep=True)
    assert len(predictor.calls) == BATCH // CHUNK_RECORDS
    assert all(len(call) == CHUNK_RECORDS for call in predictor.calls)
    lengths = [len(q) for call in predictor.calls for q in call]
    assert lengths == sorted(lengths, reverse=True)  # similar lengths share a chunk: little padding
    assert scored.values == [float(len(r.question)) for r in records()]
    assert [w[0] for w in scored.warnings] == [f"note {i}" for i in range(BATCH)]
    np.testing.assert_array_equal(scored.features[:, 1], np.arange(BATCH))


def test_chunks_are_disjoint_and_cover_every_record() -> None:
    chunks = record_chunks(records(5), max_records=2)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert sorted(i for c in chunks for i in c) == list(range(5))


def test_a_record_with_large_tables_runs_alone() -> None:
    big = RecordInput("question 0", ("|a|" * (CHUNK_CHARS // 3),))
    small = [RecordInput(f"question {i}") for i in range(1, 6)]
    chunks = record_chunks([big, *small])
    assert [0] in chunks  # over the character budget: a chunk of its own
    assert sorted(len(c) for c in chunks) == [1, 1, CHUNK_RECORDS]


def test_a_request_queued_meanwhile_runs_before_the_rest_of_a_batch() -> None:
    """One worker: a lone prediction arriving during a batch waits for one chunk, not all."""
    order: list[str] = []
    running, release = threading.Event(), threading.Event()

    class Recording(CountingPredictor):
        def predict(self, records, keep_features=False):
            order.append("lone" if records[0].question.startswith("lone") else "batch")
            if len(order) == 1:
                running.set()
                release.wait(timeout=30)  # the lone request is queued while chunk 1 runs
            return super().predict(records, keep_features)

    async def scenario():
        pool = InferencePool(workers=1)
        model = _model(Recording())
        try:
            batch = asyncio.ensure_future(pool.predict(model, records()))
            while not running.is_set():
                await asyncio.sleep(0.01)
            lone = asyncio.ensure_future(pool.predict(model, [RecordInput("lone 0")]))
            await asyncio.sleep(0.05)  # on the event loop only: the lone chunk gets queued
            release.set()
            await asyncio.gather(batch, lone)
        finally:
            await pool.stop()

    asyncio.run(scenario())
    assert order[:3] == ["batch", "lone", "batch"]
    assert len(order) == BATCH // CHUNK_RECORDS + 1


def test_a_batch_whose_client_leaves_mid_way_stops_at_its_next_chunk(tmp_path) -> None:
    metrics = ServiceMetrics(tmp_path)
    gone = threading.Event()
    predictor = CountingPredictor(on_call=lambda n: gone.set() if n == 3 else None)
    with pytest.raises(ClientGone):
        _predict(predictor, metrics, gone)
    assert len(predictor.calls) == 3  # the fourth chunk never ran
    assert _value(metrics, "fmops_predictions_cancelled_total", when="running") == 1
    assert _value(metrics, "fmops_predictions_cancelled_total", when="queued") == 0
    assert _value(metrics, "fmops_cancelled_records_total") == BATCH - 3 * CHUNK_RECORDS
    assert _value(metrics, "fmops_inference_running") == 0  # the worker is free again
    assert _value(metrics, "fmops_model_batch_size_count") == 0  # no model call completed


def test_a_request_whose_client_left_before_it_started_costs_nothing(tmp_path) -> None:
    metrics = ServiceMetrics(tmp_path)
    gone = threading.Event()
    gone.set()
    predictor = CountingPredictor()
    with pytest.raises(ClientGone):
        _predict(predictor, metrics, gone)
    assert predictor.calls == []
    assert _value(metrics, "fmops_predictions_cancelled_total", when="queued") == 1
    assert _value(metrics, "fmops_cancelled_records_total") == BATCH


def test_a_cancelled_request_runs_no_further_chunk(tmp_path) -> None:
    """The route cancels the waiting coroutine when the client hangs up (and sets ``gone``)."""
    metrics = ServiceMetrics(tmp_path)
    gone = threading.Event()
    first = threading.Event()
    release = threading.Event()

    def on_call(n: int) -> None:
        if n == 1:
            first.set()
            release.wait(timeout=30)

    predictor = CountingPredictor(on_call=on_call)

    async def scenario():
        pool = InferencePool(workers=1, metrics=metrics)
        try:
            task = asyncio.ensure_future(pool.predict(_model(predictor), records(), False, gone))
            while not first.is_set():
                await asyncio.sleep(0.01)
            gone.set()
            task.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await pool.stop()

    asyncio.run(scenario())
    assert len(predictor.calls) == 1
    assert _value(metrics, "fmops_predictions_cancelled_total", when="running") == 1
    assert _value(metrics, "fmops_cancelled_records_total") == BATCH - CHUNK_RECORDS
