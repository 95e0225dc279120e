"""The FastAPI application: ``uvicorn financemath_mlops.serving.app:app``.

``app`` is built at import by :func:`create_app` without any I/O; settings are read, MLflow is
configured and the model is loaded in the lifespan, when a server actually starts. A model that
cannot be loaded does not stop the start: ``/health`` answers, ``/ready`` and ``/predict`` say 503
with the reason, and a reload (``POST /admin/reload`` or the periodic one) can fix it later.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import anyio
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from financemath_mlops import __version__ as package_version
from financemath_mlops.config import (
    MLflowSettings,
    MonitoringSettings,
    PathsSettings,
    ServingSettings,
    Settings,
    load_settings,
)
from financemath_mlops.monitoring.prediction_log import PredictionLog
from financemath_mlops.serving import docs_pages
from financemath_mlops.serving.dependencies import (
    PREDICTION_LOG,
    TRACKING_STORE,
    Dependencies,
    failure_cause,
    public_address,
)
from financemath_mlops.serving.error_responses import install_error_handlers
from financemath_mlops.serving.inference import InferencePool, adaptive_workers, pool_size
from financemath_mlops.serving.metrics import ServiceMetrics
from financemath_mlops.serving.middleware import BodyGuard, RequestContext
from financemath_mlops.serving.model_holder import (
    LoadedModel,
    ModelHolder,
    ModelLoadError,
    ReloadOutcome,
    describe_failure,
)
from financemath_mlops.serving.routes import router
from financemath_mlops.serving.schemas import apply_limits_to_openapi
from financemath_mlops.serving.security import redact_access_log, report_missing_key

log = logging.getLogger(__name__)

DESCRIPTION = """Predicts the numeric answer of a FinanceMath question (text + markdown tables)
with the model registered in MLflow. Errors always have the shape
`{"error": {"code", "message", "details"}}`. When `serving.api_key` is set, `/predict*`, `/model`
and `/admin/*` need it (`Authorization: Bearer <key>` or `X-API-Key`)."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ServiceSettings(NamedTuple):
    """The sections of the settings the service reads, and nothing else."""

    serving: ServingSettings  # the model to serve, limits, API key, reloads, MLflow call bounds
    mlflow: MLflowSettings  # the store a models:/ or runs:/ model URI resolves in
    monitoring: MonitoringSettings  # the prediction log
    paths: PathsSettings  # reports_dir (metrics' state), predictions_dir (the prediction log)

    @classmethod
    def of(cls, settings: Settings) -> ServiceSettings:
        """Slice the whole settings (what the command line and a bare `uvicorn ...:app` load)."""
        return cls(settings.serving, settings.mlflow, settings.monitoring, settings.paths)


class ServiceState:
    """Everything the endpoints share: settings, the model holder, the pool and the metrics."""

    def __init__(self, settings: ServiceSettings | None = None) -> None:
        self.given_settings = settings
        self.settings: ServiceSettings | None = settings
        self.holder: ModelHolder | None = None
        self.pool: InferencePool | None = None
        self.metrics: ServiceMetrics | None = None
        self.prediction_log: PredictionLog | None = None
        self.dependencies = Dependencies()
        self._reloader: asyncio.Task[None] | None = None
        self._configure_lock = threading.Lock()
        self._configured = False

    @property
    def serving(self) -> ServingSettings:
        return self.settings.serving if self.settings is not None else ServingSettings()

    def max_body_bytes(self) -> int:
        return self.serving.max_body_bytes

    async def start(self) -> None:
        from financemath_mlops import runs

        settings = self.given_settings or ServiceSettings.of(load_settings())
        self.settings = settings
        _ensure_logging()
        redact_access_log()  # under any server: a key sent in the query string stays out of it
        serving = settings.serving
        report_missing_key(serving)
        runs.limit_http_requests(serving.mlflow_timeout_s, serving.mlflow_retries)
        # Refuse a missing store, never create it empty.
        served = runs.served_uri(serving)
        runs.require_store(settings.mlflow, served)
        self.metrics = ServiceMetrics(settings.paths.reports_dir, settings.paths.predictions_dir)
        self.dependencies = Dependencies(self.metrics.dependency_up)
        if runs.is_tracked_uri(served):
            self.dependencies.declare(TRACKING_STORE, public_address(settings.mlflow.tracking_uri))
        listener = _LogListener(self.metrics.prediction_log, self.dependencies)
        self.prediction_log = listener.log = PredictionLog.configured(
            settings.monitoring, settings.paths.predictions_dir, listener
        )
        if self.prediction_log.enabled:
            self.dependencies.declare(PREDICTION_LOG, "paths.predictions_dir", up=True)
        cores = available_cores()
        if serving.inference_threads:  # fixed: every call gets this many ONNX threads
            threads = concurrent = serving.inference_threads
            workers = pool_size(cores, threads)
        else:  # adaptive: a lone call uses every core, overlapping calls one core each
            threads, concurrent, workers = cores, 1, adaptive_workers(cores)
        self.pool = InferencePool(workers, self.metrics)
        self.holder = ModelHolder(
            serving, threads, concurrent, self._model_changed, self._store_said
        )
        # The model loads in the background: /health answers at once whatever MLflow does, and
        # /ready says 503 with the reason until a model is in service.
        self._reloader = asyncio.create_task(self._load_then_refresh(serving))

    async def _load_then_refresh(self, serving: ServingSettings) -> None:
        """First load with back-off until it succeeds, then the periodic reload (if any)."""
        from financemath_mlops import runs

        delay = 1.0
        while True:
            # POST /admin/reload may have put a model in service while this loop slept: its
            # work is done then. Trying again would follow the alias once more, unasked (with
            # reload_interval_s 0 the service follows the alias only when told to).
            if self.holder is not None and self.holder.current is not None:
                break
            try:
                await self.reload()
                break
            except ModelLoadError as exc:
                log.warning("no model yet (/ready says 503), next try in %.0fs: %s", delay, exc)
            except runs.TrackingError as exc:
                assert self.holder is not None
                served = runs.served_uri(serving)
                self.holder.problem = describe_failure(served, exc)  # no paths
                log.warning("no model yet (/ready says 503), next try in %.0fs: %s", delay, exc)
            except Exception as exc:
                assert self.holder is not None
                self.holder.problem = f"the model could not be loaded ({type(exc).__name__})"
                log.exception("model load failed; next try in %.0fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, serving.load_retry_max_s, serving.reload_interval_s or 1e9)
        if serving.reload_interval_s > 0:
            await self._reload_every(serving.reload_interval_s)

    async def stop(self) -> None:
        if self._reloader is not None:
            self._reloader.cancel()
            await asyncio.gather(self._reloader, return_exceptions=True)
        if self.pool is not None:
            await self.pool.stop()
        if self.prediction_log is not None:
            self.prediction_log.close()  # flushes what is queued
        if self.metrics is not None:
            self.metrics.close()

    async def reload(self) -> ReloadOutcome:
        """Re-resolve and (if changed) load the model on a worker thread; counts the result."""
        assert self.holder is not None and self.metrics is not None
        try:
            outcome = await anyio.to_thread.run_sync(self._configure_and_load)
        except ModelLoadError:
            self.metrics.model_reloads.labels("failed").inc()
            raise
        self.metrics.model_reloads.labels("loaded" if outcome.changed else "unchanged").inc()
        return outcome

    def _configure_and_load(self) -> ReloadOutcome:
        """On a worker thread. MLflow is imported (seconds) and configured once, under a lock:
        two threads importing it at once (the background load and POST /admin/reload) can see
        its modules half-initialised (ImportError from its circular imports)."""
        from financemath_mlops import runs

        assert self.holder is not None and self.settings is not None
        with self._configure_lock:
            if not self._configured:
                # A model folder needs no tracking store, and importing MLflow to configure one
                # costs about a second of start-up (issue 18).
                if runs.is_tracked_uri(runs.served_uri(self.settings.serving)):
                    runs.configure(self.settings.mlflow)
                self._configured = True
        return self.holder.load()

    async def _reload_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.reload()
            except ModelLoadError:
                pass  # logged by the holder; the current model (if any) stays in service
            except Exception:
                log.exception("periodic model reload failed")

    def _store_said(self, up: bool, exc: Exception | None) -> None:
        """The tracking store's part of the last (re)load: the error names it, its address and
        the bound each of its calls has."""
        error = None
        if exc is not None and self.settings is not None:
            serving = self.settings.serving
            error = (
                f"the tracking store at {public_address(self.settings.mlflow.tracking_uri)} "
                f"{failure_cause(exc)} (each call bounded by serving.mlflow_timeout_s = "
                f"{serving.mlflow_timeout_s} s, {1 + serving.mlflow_retries} tries); the model "
                "in service keeps answering"
            )
        self.dependencies.report(TRACKING_STORE, up, error)

    def _model_changed(self, model: LoadedModel) -> None:
        if self.metrics is not None:
            ref = model.ref
            self.metrics.set_model(
                ref.name or "", ref.version or "", ref.alias or "", ref.run_id or "",
                trained_at=model.trained_at,
            )  # fmt: skip


class _LogListener:
    """The prediction log's listener: its Prometheus counters, and the log's folder as one of the
    service's dependencies (down while the log cannot make rows durable)."""

    def __init__(self, metrics: Any, dependencies: Dependencies) -> None:
        self.metrics = metrics
        self.dependencies = dependencies
        self.log: PredictionLog | None = None

    def written(self, rows: int) -> None:
        self.metrics.written(rows)

    def dropped(self, rows: int, reason: str) -> None:
        self.metrics.dropped(rows, reason)

    def write_error(self) -> None:
        self.metrics.write_error()

    def durable(self, durable: bool) -> None:
        self.metrics.durable(durable)
        error = self.log.last_error if self.log is not None else None
        self.dependencies.report(PREDICTION_LOG, durable, error)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """Build the app from the sections it reads; ``None`` loads the settings (YAML + FMOPS_ env)
    when the server starts and slices them (:meth:`ServiceSettings.of`): uvicorn's workers
    import ``app`` and can be handed nothing else."""
    state = ServiceState(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="FinanceMath prediction service",
        version=package_version,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from docs_pages: no CDN
        redoc_url=None,
        redirect_slashes=False,  # no 307 to a URL built from the Host header: 404 instead
    )
    app.state.service = state
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(docs_pages.router)
    app.add_middleware(BodyGuard, limits=lambda: state.serving)
    app.add_middleware(  # outermost
        RequestContext, metrics=lambda: state.metrics, limits=lambda: state.serving
    )
    app.openapi = lambda: _openapi(app, state)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, state: ServiceState) -> dict[str, Any]:
    """The schema with the configured limits, and without admin/auth parts when there is no key."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    apply_limits_to_openapi(schema, state.serving)
    if state.serving.api_key is None:
        schema["paths"].pop("/admin/reload", None)
        schema.get("components", {}).pop("securitySchemes", None)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.pop("security", None)
                operation.get("responses", {}).pop("401", None)
    if state.settings is not None:  # cache only once the real settings are known
        app.openapi_schema = schema
    return schema


def _ensure_logging() -> None:
    """Show our INFO story under plain `uvicorn ...:app` (which configures only its own loggers)."""
    if not logging.getLogger().handlers:
        from financemath_mlops.cli import setup_logging

        setup_logging(os.environ.get("FMOPS_LOG_LEVEL", "INFO"))


app = create_app()
