"""Prometheus metrics of the service, correct under several uvicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (before the process starts), prometheus-client keeps values
in per-process files; ``/metrics`` then aggregates every worker with ``MultiProcessCollector`` and
gauges say how to combine workers (``multiprocess_mode``). Without it, each app has its own
registry (so tests can build several apps in one process) plus the process/GC collectors.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)  # fmt: skip


def signed_log_buckets(decades: int = 7) -> tuple[float, ...]:
    """-10^d .. -1, 0, 1 .. 10^d in half-decade steps (1, 3, 10, 30, ...).

    FinanceMath answers run from about -5e5 to 5e6 with a median near 16, so linear buckets would
    put almost everything in one bin; these resolve every order of magnitude on both signs.
    """
    positive = [m * 10.0**e for e in range(decades) for m in (1.0, 3.0)] + [10.0**decades]
    return (*(-v for v in reversed(positive)), 0.0, *positive)


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class ServiceMetrics:
    """The metric objects and their exposition."""

    def __init__(
        self,
        reports_dir: str | os.PathLike[str] = "reports",
        predictions_dir: str | os.PathLike[str] = "data/predictions",
    ) -> None:
        from financemath_mlops.monitoring.prometheus import (
            PredictionLogDiskCollector,
            PredictionLogMetrics,
            ReportMetricsCollector,
            counter,
            gauge,
            histogram,
        )

        self.multiprocess = multiprocess_mode()
        self.registry = CollectorRegistry(auto_describe=True)
        if not self.multiprocess:
            from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        reg = self.registry
        # Monitoring: prediction-log counters, and the latest drift/performance report numbers
        # (read from reports/latest.json at scrape time; see docs/monitoring.md).
        self.prediction_log = PredictionLogMetrics(reg)
        self.reports = ReportMetricsCollector(reports_dir)
        self.log_disk = PredictionLogDiskCollector(predictions_dir)
        if not self.multiprocess:
            reg.register(self.reports)
            reg.register(self.log_disk)
        # What the service needs beside its model (serving/dependencies.py): 0 while the last
        # call to it failed; the service keeps answering with the model it has.
        self.dependency_up = gauge(
            reg,
            "dependency_up",
            "1 when the dependency answered its last call (tracking_store: the last model "
            "(re)load; prediction_log: its folder takes writes), 0 when it did not",
            "livemin",
            ["name"],
        )
        self.requests = counter(
            reg,
            "http_requests",
            "HTTP requests by endpoint (route template), method and status code",
            ["endpoint", "method", "status"],
        )
        self.request_latency = histogram(
            reg,
            "http_request_duration_seconds",
            "Time from request start to the end of the response, by endpoint",
            LATENCY_BUCKETS,
            ["endpoint"],
        )
        self.in_flight = gauge(
            reg, "http_requests_in_flight", "Requests being handled right now", "livesum"
        )
        self.errors = counter(
            reg,
            "errors",
            "Error responses by error code (validation_error, payload_too_large, ...)",
            ["type"],
        )
        self.embedding_latency = histogram(
            reg,
            "embedding_duration_seconds",
            "Question embedding time per model call (a batch request is one call)",
            LATENCY_BUCKETS,
        )
        self.inference_latency = histogram(
            reg,
            "inference_duration_seconds",
            "Gradient-boosting inference time per model call",
            LATENCY_BUCKETS,
        )
        self.inference_running = gauge(
            reg,
            "inference_running",
            "Model calls running on the worker threads right now",
            "livesum",
        )
        self.cancelled = counter(
            reg,
            "predictions_cancelled",
            "Model calls dropped because the client hung up: before they started (queued) or "
            "between two chunks of records (running)",
            ["when"],
        )
        self.cancelled_records = counter(
            reg, "cancelled_records", "Records of cancelled model calls that were never computed"
        )
        for when in ("queued", "running"):  # export the series at 0 so rate() works from the start
            self.cancelled.labels(when)
        self.batch_size = histogram(
            reg,
            "model_batch_size",
            "Records per model call (1 for /predict, the number of items for /predict/batch)",
            (1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.prediction_value = histogram(
            reg,
            "prediction_value",
            "Predicted answers (signed, log-spaced buckets)",
            signed_log_buckets(),
        )
        self.model_info = gauge(
            reg,
            "model_info",
            "The model served (1 for the current name/version/alias)",
            "livemax",
            ["name", "version", "alias", "run_id"],
        )
        self.model_ready = gauge(
            reg, "model_ready", "1 when a model is loaded and predictions are served", "livemin"
        )
        self.model_reloads = counter(
            reg,
            "model_reloads",
            "Model (re)load attempts by result (loaded, unchanged, failed)",
            ["result"],
        )
        # Unix time the served model's training run started (0 until known): the model-age alert.
        self.model_trained = gauge(
            reg,
            "model_trained_timestamp_seconds",
            "Unix time the served model was trained (its MLflow run's start; 0 when unknown)",
            "livemax",
        )
        self._info_labels: tuple[str, str, str, str] | None = None
        self.model_ready.set(0)

    def set_model(
        self, name: str, version: str, alias: str, run_id: str, trained_at: float | None = None
    ) -> None:
        """The model now served; ``trained_at`` (Unix seconds) when the registry knows it."""
        self.model_trained.set(trained_at or 0)
        labels = (name, version, alias, run_id)
        if self._info_labels is not None and self._info_labels != labels:
            if self.multiprocess:
                self.model_info.labels(*self._info_labels).set(0)
            else:
                self.model_info.remove(*self._info_labels)
        self.model_info.labels(*labels).set(1)
        self._info_labels = labels
        self.model_ready.set(1)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(self.reports)
            registry.register(self.log_disk)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """Forget this worker's live gauges (multiprocess mode) when it shuts down."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())
