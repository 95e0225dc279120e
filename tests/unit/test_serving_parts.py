"""Pure pieces of the service: JSON depth, request ids, limits, buckets, key checks, the queue."""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from unittest import mock

import numpy as np
import pytest

from financemath_mlops import runs
from financemath_mlops.config import ServingSettings
from financemath_mlops.records import RecordInput
from financemath_mlops.serving import middleware
from financemath_mlops.serving.inference import InferencePool, pool_size
from financemath_mlops.serving.metrics import signed_log_buckets
from financemath_mlops.serving.middleware import client_request_id, json_depth
from financemath_mlops.serving.model_holder import LoadedModel
from financemath_mlops.serving.schemas import (
    BatchRequest,
    PredictRequest,
    check_batch_limits,
    check_record_limits,
)
from financemath_mlops.serving.security import key_matches


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"", 0),
        (b'{"question": "x"}', 1),
        (b'{"items": [{"question": "[[[[{{{{"}]}', 3),
        (b'{"q": "escaped \\" [[[ quote"}', 1),
        (b"[" * 50 + b"]" * 50, 50),
    ],
)
def test_json_depth_ignores_brackets_in_strings(body, depth):
    assert json_depth(body) == depth


@pytest.mark.parametrize(
    ("value", "kept"),
    [(b"abc-123", True), (b"a" * 128, True), (b"a" * 129, False), (b"has space", False),
     (b"semi;colon", False), (b"", False)],
)  # fmt: skip
def test_client_request_id_is_kept_only_when_sane(value, kept):
    got = client_request_id([(b"x-request-id", value)])
    assert (got == value.decode()) is kept
    assert got is None or kept


def test_prediction_buckets_are_symmetric_log_spaced_and_sorted():
    buckets = signed_log_buckets(7)
    assert list(buckets) == sorted(buckets)
    assert buckets[len(buckets) // 2] == 0.0
    assert buckets[-1] == 1e7 and buckets[0] == -1e7
    positive = [b for b in buckets if b > 0]
    assert all(b2 / b1 <= 3.4 for b1, b2 in zip(positive, positive[1:], strict=False))


def test_record_limits_name_each_problem():
    limits = ServingSettings(max_question_chars=10, max_tables=1, max_table_chars=5)
    record = PredictRequest(question="q" * 11, tables=["123456", "1"])
    problems = check_record_limits(record, limits)
    assert [p["loc"] for p in problems] == [
        ["body", "question"],
        ["body", "tables"],
        ["body", "tables", 0],
    ]


def test_batch_limit_applies_before_item_limits():
    limits = ServingSettings(max_batch=2)
    batch = BatchRequest(items=[PredictRequest(question="q")] * 3)
    assert [p["loc"] for p in check_batch_limits(batch, limits)] == [["body", "items"]]


def test_key_matches_only_the_exact_key():
    assert key_matches("k3y", "k3y")
    assert not key_matches("k3y", "k3y ")
    assert not key_matches("k3y", "")
    assert not key_matches("k3y", None)
    assert not key_matches("k3y", "ключ")  # non-ASCII offered keys do not raise


def test_a_non_ascii_key_matches_the_utf8_bytes_a_client_sends():
    as_received = "ключ-€".encode().decode("latin-1")  # how Starlette hands a header over
    assert key_matches("ключ-€", as_received)
    assert not key_matches("ключ-€", "ключ-€".encode("cp1251").decode("latin-1"))


# --- the inference pool ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "threads", "workers"), [(2, 2, 1), (2, 1, 2), (8, 2, 4), (2, 4, 1), (1, 1, 1)]
)
def test_the_pool_never_oversubscribes_the_cores(cores, threads, workers):
    assert pool_size(cores, threads) == workers


@dataclass
class _Prediction:
    values: np.ndarray
    warnings: list[list[str]]
    embed_seconds: float = 0.001
    inference_seconds: float = 0.001
    features: np.ndarray | None = None


class _StubPredictor:
    """Predicts len(question), inf for 'inf'; fails on 'boom'; records the calling thread."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def predict(self, records, keep_features=False):
        self.threads.add(threading.current_thread().name)
        if any(r.question == "boom" for r in records):
            raise RuntimeError("bad input")
        values = [math.inf if r.question == "inf" else len(r.question) for r in records]
        return _Prediction(np.asarray(values, dtype=float), [[] for _ in records])


def _model(predictor) -> LoadedModel:
    ref = runs.ModelRef("models:/m/1", "m", "1", None, "run")
    return LoadedModel(ref, predictor, "models:/m/1", datetime.now(UTC), {})


def _predict(predictor, records):
    async def scenario():
        pool = InferencePool(workers=2)
        try:
            return await pool.predict(_model(predictor), records)
        finally:
            await pool.stop()

    return asyncio.run(scenario())


def test_predictions_run_on_worker_threads_not_the_event_loop():
    predictor = _StubPredictor()
    result = _predict(predictor, [RecordInput("ab"), RecordInput("abc")])
    assert result.values == [2.0, 3.0]
    assert all(name.startswith("fmops-predict") for name in predictor.threads)


def test_non_finite_predictions_become_null_with_a_warning():
    result = _predict(_StubPredictor(), [RecordInput("inf", topic="Astrology")])
    assert result.values == [None]
    assert "non-finite" in result.warnings[0][0]
    assert "unknown topic" in result.warnings[0][1]


def test_model_errors_reach_the_caller():
    with pytest.raises(RuntimeError, match="bad input"):
        _predict(_StubPredictor(), [RecordInput("boom")])


def test_load_failure_reasons_keep_sql_paths_and_credentials_for_the_log():
    from financemath_mlops.runs import TrackingError
    from financemath_mlops.serving.model_holder import describe_failure

    sql = TrackingError(
        "cannot resolve model models:/m@champion: (sqlite3.OperationalError) no such table: "
        "model_versions\n[SQL: SELECT model_versions.name FROM model_versions WHERE name = ?]\n"
        "[parameters: ('m',)]\n(Background on this error at: https://sqlalche.me/e/20/e3q8)"
    )
    public = describe_failure("models:/m@champion", sql)
    assert "SELECT" not in public and "sqlite3" not in public and "model_versions" not in public
    assert public.startswith("cannot resolve model models:/m@champion")
    path = TrackingError('cannot load model /srv/secret/m: no "MLmodel" at "/srv/secret/m"')
    assert "/srv" not in describe_failure("/srv/secret/m", path)
    creds = TrackingError("cannot reach http://user:pw@mlflow:5000/api")
    assert "pw" not in describe_failure("models:/m@c", creds)


# --- refusal pacing ---------------------------------------------------------------------------


def _paced_call(status: int, work_s: float, settings: ServingSettings) -> float:
    """Seconds from the start of a request to its answer's first byte, through RequestContext,
    for an endpoint that works ``work_s`` and then answers ``status``."""
    from financemath_mlops.serving.middleware import RequestContext

    async def endpoint(scope, receive, send) -> None:
        await asyncio.sleep(work_s)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = RequestContext(endpoint, metrics=lambda: None, limits=lambda: settings)
    answered: list[float] = []

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            answered.append(asyncio.get_running_loop().time())

    async def receive():
        return {"type": "http.disconnect"}

    async def call() -> float:
        started = asyncio.get_running_loop().time()
        scope = {"type": "http", "method": "POST", "path": "/predict", "headers": []}
        await middleware(scope, receive, send)
        return answered[0] - started

    return asyncio.run(call())


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_a_refusal_waits_pace_times_what_its_request_took(status):
    """A client sending refused requests in a loop gets at most 1/(1 + pace) of the loop."""
    paced = ServingSettings(refusal_pace=3.0, refusal_pace_max_s=5.0)
    assert _paced_call(status, 0.1, paced) >= 0.1 * (1 + 3.0)
    capped = ServingSettings(refusal_pace=3.0, refusal_pace_max_s=0.05)  # the wait, at most
    assert 0.15 <= _paced_call(status, 0.1, capped) < 0.1 * (1 + 3.0)


@pytest.mark.parametrize(
    ("status", "settings"),
    [(200, ServingSettings(refusal_pace=3.0)), (503, ServingSettings(refusal_pace=3.0)),
     (422, ServingSettings(refusal_pace=0.0))],
)  # fmt: skip
def test_answers_that_are_not_refusals_and_pace_0_never_wait(status, settings):
    assert _paced_call(status, 0.1, settings) < 0.1 * (1 + 3.0)


# --- malformed JSON refused by the body guard ---------------------------------------------------


def _guarded(body: bytes) -> tuple[int | None, bytes, bool]:
    """(status, body, whether the app behind the guard ran) for one POST through BodyGuard."""
    from financemath_mlops.serving.middleware import BodyGuard

    reached: list[bool] = []

    async def endpoint(scope, receive, send) -> None:
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = BodyGuard(endpoint, limits=lambda: ServingSettings())
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/predict",
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode())],
    }  # fmt: skip
    asyncio.run(guard(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, payload, bool(reached)


@pytest.mark.parametrize(
    "body",
    [
        b'{"question": "' + b'\\"' * 50_000,
        b'{"question": "a", "tables": [' + b" " * 70_000,
        b'{"a": 1}}' + b" " * 70_000,
    ],
)
def test_a_large_body_proven_not_json_is_refused_before_parsing(body):
    """An open string or unbalanced brackets in a body the quick bound leaves to the scan:
    400 invalid_json from the guard, the app never runs (a small one is the parser's 400:
    test_serving_app)."""
    status, payload, reached = _guarded(body)
    assert (status, reached) == (400, False)
    assert b"invalid_json" in payload and b"left open or the brackets" in payload


def test_a_small_body_within_the_limits_skips_the_scan():
    """Below SCAN_INLINE_BYTES, a body with few brackets and commas cannot break a limit: the
    guard lets it through without the scan, malformed or not (the parser refuses it next)."""
    with mock.patch.object(middleware, "json_shape", side_effect=AssertionError("scanned")):
        assert _guarded(b'{"question": "a", "tables": [')[::2] == (200, True)


def test_a_well_formed_body_reaches_the_app():
    assert _guarded(b'{"question": "a \\"quoted\\" [word]", "tables": []}')[::2] == (200, True)
