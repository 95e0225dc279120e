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

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from financemath_mlops.monitoring.publish import REPORT_GAUGES, latest_report_metrics

PREFIX = "fmops"
DROP_REASONS = ("queue_full", "write_error", "closed")
PREDICTION_LOG_METRICS = (
    f"{PREFIX}_prediction_log_written_total",
    f"{PREFIX}_prediction_log_dropped_total",
    f"{PREFIX}_prediction_log_write_errors_total",
    f"{PREFIX}_prediction_log_durable",
    f"{PREFIX}_prediction_log_disk_free_bytes",
    f"{PREFIX}_prediction_log_disk_size_bytes",
)
MONITORING_METRICS: tuple[str, ...] = (*PREDICTION_LOG_METRICS, *REPORT_GAUGES)


# Every metric the service exports is built by one of these three: named fmops_<name>, in the
# given registry (prometheus-client adds ``_total`` to a counter's name when it exposes it).
def counter(registry: Any, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    return Counter(f"{PREFIX}_{name}", doc, labels, registry=registry)


def gauge(registry: Any, name: str, doc: str, mode: str, labels: Sequence[str] = ()) -> Gauge:
    """``mode``: how the workers' values combine in multiprocess mode (livesum, livemin, ...)."""
    return Gauge(f"{PREFIX}_{name}", doc, labels, registry=registry, multiprocess_mode=mode)


def histogram(
    registry: Any, name: str, doc: str, buckets: Sequence[float], labels: Sequence[str] = ()
) -> Histogram:
    return Histogram(f"{PREFIX}_{name}", doc, labels, buckets=buckets, registry=registry)


class PredictionLogMetrics:
    """The prediction log's listener: counts written and dropped entries as Prometheus counters."""

    def __init__(self, registry: Any) -> None:
        self.written_total = counter(
            registry, "prediction_log_written", "Predictions written to the prediction log"
        )
        self.dropped_total = counter(
            registry,
            "prediction_log_dropped",
            "Predictions not logged, by reason (queue_full, write_error, closed)",
            ["reason"],
        )
        self.write_errors_total = counter(
            registry,
            "prediction_log_write_errors",
            "Failed writes of the prediction log (journal or part file: disk full, no "
            "permission); while they fail the writer retries every flush interval",
        )
        # livemin: one worker that cannot make its rows durable makes the service not durable.
        self.durable_gauge = gauge(
            registry,
            "prediction_log_durable",
            "1 while every answered prediction taken by the log is on disk (journal or part "
            "file); 0 from a failed write until the rows held in memory are written",
            "livemin",
        )
        self.durable_gauge.set(1)
        for reason in DROP_REASONS:  # export the series at 0 so rate() works from the start
            self.dropped_total.labels(reason)

    def written(self, rows: int) -> None:
        self.written_total.inc(rows)

    def dropped(self, rows: int, reason: str) -> None:
        self.dropped_total.labels(reason).inc(rows)

    def write_error(self) -> None:
        self.write_errors_total.inc()

    def durable(self, durable: bool) -> None:
        self.durable_gauge.set(1 if durable else 0)


def disk_space(directory: Path | str) -> tuple[int, int] | None:
    """(free, size) in bytes of the file system holding ``directory`` (its nearest existing
    parent before the log creates it); None when nothing on the path exists."""
    path = Path(directory).absolute()
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
    return None


class PredictionLogDiskCollector(Collector):
    """Free and total bytes where the prediction log writes, read at scrape time (a statvfs:
    microseconds), so the alert can warn before the disk is full, not after."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterable[Metric]:
        return list(self._families(disk_space(self.directory)))

    @staticmethod
    def _families(space: tuple[int, int] | None) -> Iterable[Metric]:
        helps = (
            ("free", "Bytes free to unprivileged writers on the prediction log's file system"),
            ("size", "Size in bytes of the prediction log's file system"),
        )
        for i, (what, text) in enumerate(helps):
            name = f"{PREFIX}_prediction_log_disk_{what}_bytes"
            yield GaugeMetricFamily(name, text, value=None if space is None else space[i])


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
