"""What the service needs beside its model, and whether each answered its last call.

Why this exists: the service keeps answering with the model it holds whatever its stores do, so
``/ready`` stays 200 while a model is in service (it feeds the Kubernetes readiness probe: a pod
must not leave rotation because MLflow is down). An operator still has to see that something it
needs is down: the ``dependencies`` field of ``/ready`` and ``fmops_dependency_up{name}`` say so.

- ``tracking_store``: the MLflow store the model is (re)loaded from, declared only when it is
  served from ``models:/`` or ``runs:/`` (a model folder needs no store). Checked by every model
  (re)load (the start, ``serving.reload_interval_s``, ``POST /admin/reload``); over HTTP each
  store call is bounded by ``serving.mlflow_timeout_s`` per try, ``1 + serving.mlflow_retries``
  tries with back-off (defaults: 10 s, 3 tries, about 33 s at most).
- ``prediction_log``: the folder the prediction log writes to (``paths.predictions_dir``); down
  from a failed write until the rows it holds are written (``fmops_prediction_log_durable``).

``/ready`` is open to anyone: addresses lose credentials and paths, errors are cut and cleaned.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

_CREDENTIALS = re.compile(r"://[^/@\s]+@")
# An absolute path (not the path part of a URI such as models:/name or http://host/path).
_PATH = re.compile(r"(?<![\w:/.])(?:/[^\s'\"(),;:]+)+")
_MAX_TEXT = 300
TRACKING_STORE = "tracking_store"
PREDICTION_LOG = "prediction_log"


@dataclass
class DependencyStatus:
    """One dependency as ``/ready`` shows it (``up`` None: not called yet)."""

    up: bool | None
    address: str
    checked_at: str | None = None
    error: str | None = None


class Dependencies:
    """The service's dependencies and their last outcome, mirrored in a labelled gauge."""

    def __init__(self, gauge: Any = None) -> None:
        self._gauge = gauge
        self._status: dict[str, DependencyStatus] = {}
        self._lock = threading.Lock()

    def declare(self, name: str, address: str, up: bool | None = None) -> None:
        with self._lock:
            self._status[name] = DependencyStatus(up, address)
        if up is not None and self._gauge is not None:
            self._gauge.labels(name).set(1 if up else 0)

    def report(self, name: str, up: bool, error: str | None = None) -> None:
        """The outcome of a call to ``name`` (ignored for a dependency never declared)."""
        with self._lock:
            status = self._status.get(name)
            if status is None:
                return
            status.up = up
            status.checked_at = datetime.now(UTC).isoformat(timespec="seconds")
            status.error = None if up else public_text(error or "no answer")
        if self._gauge is not None:
            self._gauge.labels(name).set(1 if up else 0)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {name: asdict(status) for name, status in self._status.items()}

    def down(self) -> list[str]:
        with self._lock:
            return [name for name, status in self._status.items() if status.up is False]


def public_text(text: str) -> str:
    """Text fit for an open endpoint: no credentials, no file system paths, cut short."""
    return _PATH.sub("<path>", _CREDENTIALS.sub("://***@", text))[:_MAX_TEXT]


def public_address(uri: str) -> str:
    """Where a store is, fit for an open endpoint: ``scheme://host:port`` (no user, password,
    path or query); a local file store only says what it is."""
    parts = urlsplit(uri)
    scheme = parts.scheme or "file"
    if scheme == "file" or scheme.startswith("sqlite") or not parts.netloc:
        return f"{scheme} (a local file)"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    host = parts.hostname or ""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}{port}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and what it was raised from or during (``raise ... from None`` included)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def store_unreachable(exc: BaseException) -> bool | None:
    """True when a store call failed without an answer from the store (refused, timed out, a
    5xx, a dropped database connection); False when the store answered (a 4xx: no such model,
    no permission); None when nothing in the error comes from a store call."""
    for error in _chain(exc):
        status = getattr(error, "get_http_status_code", None)
        if callable(status):  # an MlflowException: MLflow's REST client says 500 for no answer
            try:
                return int(status()) >= 500
            except (TypeError, ValueError):
                return True
        if isinstance(error, ConnectionError | TimeoutError):
            return True
        if type(error).__name__ in {"OperationalError", "InterfaceError", "ConnectionError",
                                    "Timeout", "ReadTimeout", "ConnectTimeout"}:  # fmt: skip
            return True  # SQLAlchemy / requests, known by name: neither is imported here
    return None


def failure_cause(exc: BaseException) -> str:
    """What went wrong in a few words (timed out, connection refused, ...), for /ready."""
    text = " ".join(str(error) for error in _chain(exc)).lower()
    statuses = re.search(r"too many (\d{3}) error responses", text)  # urllib3, retries used up
    if statuses:
        return f"answered HTTP {statuses.group(1)} to every try"
    for needles, cause in (
        (("timed out", "timeout"), "timed out"),
        (("refused",), "refused the connection"),
        (("name or service not known", "nodename nor servname", "temporary failure in name"),
         "host not found"),
        (("connection reset", "connection aborted", "remote end closed", "broken pipe"),
         "dropped the connection"),
    ):  # fmt: skip
        if any(needle in text for needle in needles):
            return cause
    for error in _chain(exc):
        status = getattr(error, "get_http_status_code", None)
        if callable(status) and "failed with exception" not in str(error):
            return f"answered HTTP {status()}: {public_text(str(error))[:120]}"
    return f"could not be reached ({public_text(type(exc).__name__)})"
