"""Monitoring's Prometheus metrics, for the service's ``/metrics`` (prometheus-client only).

Two kinds, built so that they stay right under several uvicorn workers:

- prediction-log counters (``fmops_prediction_log_*_total``): plain prometheus-client Counters
  in the service's registry, fed by :class:`PredictionLogMetrics` (the log's listener); in
  multiprocess mode prometheus-client adds them up over the workers like every other counter;
- report gauges (``fmops_drift_*``, ``fmops_performance_*``, see
  :data:`~.publish.REPORT_GAUGES`): :class:`ReportMetricsCollector` reads ``reports/latest.json``
  at scrape time, so every worker shows the same, newest values with no per-process state.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from financemath_mlops.monitoring.publish import REPORT_GAUGES, latest_report_metrics

PREFIX = "fmops"
DROP_REASONS = ("queue_full", "write_error", "closed")
PREDICTION_LOG_METRICS = (
    f"{PREFIX}_prediction_log_written_total",
    f"{PREFIX}_prediction_log_dropped_total",
    f"{PREFIX}_prediction_log_write_errors_total",
)
MONITORING_METRICS: tuple[str, ...] = (*PREDICTION_LOG_METRICS, *REPORT_GAUGES)


class PredictionLogMetrics:
    """The prediction log's listener: counts written and dropped entries as Prometheus counters."""

    def __init__(self, registry: Any) -> None:
        self.written_total = Counter(
            f"{PREFIX}_prediction_log_written",
            "Predictions written to the prediction log",
            registry=registry,
        )
        self.dropped_total = Counter(
            f"{PREFIX}_prediction_log_dropped",
            "Predictions not logged, by reason (queue_full, write_error, closed)",
            ["reason"],
            registry=registry,
        )
        self.write_errors_total = Counter(
            f"{PREFIX}_prediction_log_write_errors",
            "Prediction log part files that could not be written (disk full, no permission)",
            registry=registry,
        )
        for reason in DROP_REASONS:  # export the series at 0 so rate() works from the start
            self.dropped_total.labels(reason)

    def written(self, rows: int) -> None:
        self.written_total.inc(rows)

    def dropped(self, rows: int, reason: str) -> None:
        self.dropped_total.labels(reason).inc(rows)

    def write_error(self) -> None:
        self.write_errors_total.inc()


class ReportMetricsCollector(Collector):
    """Gauges with the latest report numbers, read from ``<reports_dir>/latest.json`` per scrape.

    A number the reports do not have (no report yet) is simply absent, as Prometheus expects.
    """

    def __init__(self, reports_dir: Path | str) -> None:
        self.reports_dir = Path(reports_dir)

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, spec[2]) for name, spec in REPORT_GAUGES.items()]

    def collect(self) -> Iterable[Metric]:
        for name, value in latest_report_metrics(self.reports_dir).items():
            yield GaugeMetricFamily(name, REPORT_GAUGES[name][2], value=value)
