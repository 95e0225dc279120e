"""The HTTP endpoints: predict, batch predict, health, readiness, model info, metrics, reload."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request, Response

from financemath_mlops.monitoring.prediction_log import prediction_entries
from financemath_mlops.records import RecordInput
from financemath_mlops.serving.error_responses import ApiError, capped_details, summarize
from financemath_mlops.serving.model_holder import LoadedModel, ModelLoadError
from financemath_mlops.serving.schemas import (
    BatchRequest,
    BatchResponse,
    EmbeddingInfo,
    ErrorResponse,
    HealthResponse,
    ItemPrediction,
    ModelIdentity,
    ModelInfoResponse,
    PredictRequest,
    PredictResponse,
    ReadyResponse,
    ReloadResponse,
    check_batch_limits,
    check_record_limits,
)
from financemath_mlops.serving.security import (
    KEY_SECURITY,
    check_api_key,
    configured_key,
    require_api_key,
)

router = APIRouter()


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Body is not UTF-8, not JSON, nested too deeply, or holds too many values",
        401: "API key missing or wrong (only when serving.api_key is set)",
        404: "Not found",
        413: "Body larger than serving.max_body_bytes",
        415: "Body is not sent as application/json",
        422: "A field is missing, has the wrong type, or breaks a limit",
        503: "No model is loaded (see /ready for the reason)",
    }
    return {s: {"model": ErrorResponse, "description": described[s]} for s in statuses}


def _service(request: Request) -> Any:
    return request.app.state.service


def _current_model(request: Request) -> LoadedModel:
    holder = _service(request).holder
    model = holder.current if holder is not None else None
    if model is None:
        problem = holder.problem if holder is not None else "the service is starting"
        raise ApiError(503, "model_unavailable", f"no model is loaded: {problem}")
    return model


def _elapsed_ms(request: Request) -> float:
    started = getattr(request.state, "started_at", None) or time.perf_counter()
    return round((time.perf_counter() - started) * 1000.0, 3)


def _record(item: PredictRequest) -> RecordInput:
    return RecordInput.from_mapping(dict(item))


def _reject(problems: list[dict[str, Any]], limit: int) -> None:
    if problems:
        details = capped_details(problems, limit)
        raise ApiError(422, "validation_error", summarize(details), details=details)


T = TypeVar("T")
# Event-loop turns to wait before starting work: a client that sends its request and closes at
# once has its hang-up read by the selector, its connection closed by uvicorn and our watcher
# woken a few turns later, so it gets no work at all instead of its first chunk (measured on 50
# such batches, benchmarks/attack.py's abandon case: 2 turns caught none, 4 caught 47-50, 8 no
# more; server CPU per batch 14 ms -> 3-4 ms). A turn costs microseconds.
HANG_UP_TURNS = 4


async def _while_connected(request: Request, work: Callable[[threading.Event], Awaitable[T]]) -> T:
    """Run ``work(gone)``; if the client hangs up first, set ``gone`` and stop waiting (499).

    Queued predictions check ``gone`` before they start and running ones between chunks of
    records (the pool counts both), so an abandoned request frees its worker within a chunk,
    and nothing is logged for it. (The body is already read: the next ASGI message is the
    disconnect, or it comes when the response is complete.)
    """
    gone = threading.Event()
    watcher = asyncio.ensure_future(_disconnected(request))
    for _ in range(HANG_UP_TURNS):  # a client already gone is seen here, before any work starts
        await asyncio.sleep(0)
        if watcher.done():
            break
    if watcher.done():
        raise ApiError(499, "client_gone", "the client closed the connection before the answer")
    task = asyncio.ensure_future(work(gone))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        gone.set()
        task.cancel()
        raise ApiError(499, "client_gone", "the client closed the connection before the answer")
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.05)  # a server that answers at once must not make this spin


async def _predict_and_log(service: Any, model: Any, records: list[Any], request: Request) -> Any:
    """Score on the pool, then hand the result to the prediction log (never blocks, never raises)."""
    log = service.prediction_log
    keep = log is not None and log.wants_features
    scored = await _while_connected(
        request, lambda gone: service.pool.predict(model, records, keep, gone)
    )
    if log is not None:
        log.record_many(
            prediction_entries(
                request.state.request_id, model.identity(), scored.values, scored.warnings,
                scored.features, [r.topic for r in records],
                client_request_id=getattr(request.state, "client_request_id", None),
            )
        )  # fmt: skip
    return scored


async def _score(request: Request, items: list[Any]) -> tuple[Any, dict[str, Any]]:
    """Score `items` (limits already checked) with the model in service and log them: the scores,
    and the fields every prediction response carries (model, latency, request id)."""
    service, model = _service(request), _current_model(request)
    scored = await _predict_and_log(service, model, [_record(item) for item in items], request)
    answer = {
        "model": ModelIdentity(**model.identity()),
        "latency_ms": _elapsed_ms(request),
        "request_id": request.state.request_id,
    }
    return scored, answer


def _prediction_route(path: str, response_model: type, summary: str) -> Callable[[T], T]:
    """A prediction endpoint: the API key, and the same error answers for every one of them."""
    return router.post(
        path,
        response_model=response_model,
        responses=_errors(400, 401, 413, 415, 422, 503),
        dependencies=[Depends(check_api_key)],
        openapi_extra={"security": KEY_SECURITY},
        summary=summary,
    )


@_prediction_route("/predict", PredictResponse, "Predict the numeric answer of one question")
async def predict(item: PredictRequest, request: Request) -> PredictResponse:
    serving = _service(request).serving
    _reject(check_record_limits(item, serving), serving.max_error_details)
    scored, answer = await _score(request, [item])
    return PredictResponse(prediction=scored.values[0], warnings=scored.warnings[0], **answer)


@_prediction_route(
    "/predict/batch", BatchResponse, "Predict the answers of several questions in one call"
)
async def predict_batch(batch: BatchRequest, request: Request) -> BatchResponse:
    serving = _service(request).serving
    _reject(check_batch_limits(batch, serving), serving.max_error_details)
    scored, answer = await _score(request, batch.items)
    predictions = [
        ItemPrediction(prediction=value, warnings=warnings)
        for value, warnings in zip(scored.values, scored.warnings, strict=True)
    ]
    return BatchResponse(predictions=predictions, **answer)


@router.get("/health", response_model=HealthResponse, summary="Liveness: the process answers")
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.head("/health", include_in_schema=False)
async def health_head() -> Response:
    """For probes that look only at the status (``curl -I``, some load balancers)."""
    return Response(status_code=200)


@router.get(
    "/ready",
    response_model=ReadyResponse,
    responses=_errors(503),
    summary="Readiness: a model is loaded and predictions are served",
)
async def ready(request: Request) -> ReadyResponse:
    """200 while a model is in service, whatever its stores do (the readiness probe must not take
    a serving pod out of rotation because MLflow is down): dependencies are reported, not gated."""
    dependencies = _service(request).dependencies
    try:
        model = _current_model(request)
    except ApiError as exc:
        exc.details = {"dependencies": dependencies.snapshot()}
        raise
    return ReadyResponse(
        status="ready",
        model=ModelIdentity(**model.identity()),
        dependencies=dependencies.snapshot(),
        down=dependencies.down(),
    )


@router.get(
    "/model",
    response_model=ModelInfoResponse,
    responses=_errors(401, 503),
    dependencies=[Depends(require_api_key)],
    summary="The served model: registry identity, training metrics, features, embedding",
)
async def model_info(request: Request) -> ModelInfoResponse:
    model = _current_model(request)
    config = model.predictor.config
    embedding = dict(config.get("embedding") or {})
    trained_backend = embedding.pop("backend", None)
    return ModelInfoResponse(
        model=ModelIdentity(**model.identity()),
        uri=model.ref.uri,
        source_uri=model.source_uri,
        loaded_at=model.loaded_at.isoformat(),
        training_metrics=model.training_metrics,
        feature_version=config.get("feature_version"),
        target_transform=config.get("target_transform"),
        feature_columns=list(config.get("feature_columns") or []),
        embedding=EmbeddingInfo(
            backend=config.get("served_embedding_backend", "onnx"),
            trained_backend=trained_backend,
            **embedding,
        ),
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    service_metrics = _service(request).metrics
    if service_metrics is None:
        raise ApiError(503, "starting", "metrics are available once the service has started")
    body, content_type = service_metrics.render()
    return Response(content=body, media_type=content_type)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=_errors(401, 404, 503),
    dependencies=[Depends(require_api_key)],
    summary="Re-resolve the alias and swap in a newer model version (needs the API key)",
)
async def reload(request: Request) -> ReloadResponse:
    service = _service(request)
    if configured_key(request) is None:
        raise ApiError(
            404, "not_found", "admin endpoints are enabled only when serving.api_key is set"
        )
    try:
        outcome = await service.reload()
    except ModelLoadError as exc:
        raise ApiError(503, "reload_failed", str(exc), details=_still_serving(service)) from None
    previous = outcome.previous
    return ReloadResponse(
        changed=outcome.changed,
        model=ModelIdentity(**outcome.model.identity()),
        previous=ModelIdentity(**previous.identity()) if previous is not None else None,
    )


def _still_serving(service: Any) -> dict[str, Any]:
    current = service.holder.current if service.holder is not None else None
    return {"still_serving": current.identity() if current is not None else None}
