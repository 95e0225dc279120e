"""MLflow's HTTP retries, kept to requests that are safe to send twice.

MLflow's client retries every HTTP method: its urllib3 ``Retry`` has ``allowed_methods=None``
(``mlflow/utils/request_utils.py``, ``_cached_get_request_session``), on a lost answer (read
error) and on 429/500/502/503/504 alike. For a ``POST`` that creates something (a run, a model
version, a logged model) or appends (metrics), a retry after the server acted but its answer
was lost makes a second run, a second version, a duplicated metric. Here a ``POST`` is repeated
only when nothing was sent (the connection failed: refused, name not resolved, connect timeout)
or when its endpoint is a read or a write MLflow makes idempotent (setting a tag, an alias, a
run's status, a parameter to the same value). ``GET``, ``PUT``, ``PATCH``, ``DELETE`` and the
other methods urllib3 deems idempotent keep MLflow's retries; how many and how long is bounded
by the ``MLFLOW_HTTP_REQUEST_*`` variables (:func:`.store.limit_http_requests`).

The one place that reaches into MLflow's private session factory: :func:`install` wraps
``mlflow.utils.request_utils._get_request_session`` and swaps the retry policy of the sessions
it hands out. If a later MLflow moves it, :func:`install` says so at DEBUG and MLflow's own
policy applies (``tests/unit/test_http_retries.py`` fails first).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

# POST endpoints whose second identical request changes nothing: reads sent as POST, and
# writes that set a value (last write wins). Matched on the end of the request path.
IDEMPOTENT_POSTS = (
    "/search",  # experiments, runs, logged models, datasets, traces
    "/get-latest-versions",
    "/traces/batchGetInfos",
    "/set-tag",  # run, model version, registered model
    "/set-experiment-tag",
    "/registered-models/alias",  # set an alias (delete is a DELETE)
    "/runs/update",  # status, end time, name
    "/experiments/update",
    "/runs/log-parameter",  # the same value again is accepted; another value is refused anyway
)


def is_idempotent(method: str | None, path: str) -> bool:
    if method is None:
        return False
    if method.upper() != "POST":
        return method.upper() in Retry.DEFAULT_ALLOWED_METHODS | {"PATCH"}  # PATCH sets a value
    return path.rstrip("/").endswith(IDEMPOTENT_POSTS)


class IdempotentRetry(Retry):
    """MLflow's retry policy (counts, back-off, status codes), minus repeating a write."""

    def increment(  # type: ignore[override]
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> Retry:
        unsent = error is not None and self._is_connection_error(error)
        if not unsent and not is_idempotent(method, urlsplit(url or "").path):
            if error is not None:
                raise error.with_traceback(_stacktrace)
            status = getattr(response, "status", None)
            reason = f"{status} answer to {method} {url}: a write is not sent twice"
            raise MaxRetryError(_pool, url or "", ResponseError(reason))
        return super().increment(method, url, response, error, _pool, _stacktrace)


def as_idempotent(retry: Retry) -> IdempotentRetry:
    """The same policy as ``retry`` (MLflow's), as an :class:`IdempotentRetry`."""
    if isinstance(retry, IdempotentRetry):
        return retry
    idempotent = IdempotentRetry.__new__(IdempotentRetry)
    idempotent.__dict__.update(retry.__dict__)
    return idempotent


def install() -> bool:
    """Make MLflow's HTTP sessions in this process use :class:`IdempotentRetry` (idempotent:
    calling it again changes nothing). False when MLflow no longer has the function to wrap."""
    try:
        from mlflow.utils import request_utils
    except ImportError:
        return False
    original = getattr(request_utils, "_get_request_session", None)
    if original is None:
        log.debug("mlflow.utils.request_utils._get_request_session is gone: MLflow's retries apply")
        return False
    if getattr(original, "_fmops_idempotent", False):
        return True

    def session(*args: Any, **kwargs: Any) -> Any:
        made = original(*args, **kwargs)  # cached by MLflow: swapped once per session
        for adapter in made.adapters.values():
            retry = getattr(adapter, "max_retries", None)
            if isinstance(retry, Retry) and not isinstance(retry, IdempotentRetry):
                adapter.max_retries = as_idempotent(retry)
        return made

    session._fmops_idempotent = True  # type: ignore[attr-defined]
    request_utils._get_request_session = session
    return True
