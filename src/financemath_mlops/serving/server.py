"""How the service meets the network: uvicorn's options and a header deadline, in one place.

`python -m financemath_mlops.serving` is the one entry point (README, Dockerfile CMD, compose,
the flow's printed command) and passes :func:`uvicorn_options`, so every deployment gets the
same connection limits. Uvicorn alone closes idle keep-alive connections but lets a new
connection wait forever for its request line and headers (idle sockets, slow-header clients),
and its default parser (httptools) takes headers of any size. :class:`HeaderDeadline` closes any
connection that has no request in progress once ``serving.header_timeout_s`` has passed since it
opened or since its last response, and answers 431 to a request head over
:data:`MAX_HEAD_BYTES` or :data:`MAX_HEADERS` fields. Bodies have their own deadline in the app
(``BodyGuard``, 408).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from financemath_mlops.config import ServingSettings, load_settings

log = logging.getLogger(__name__)

FD_MARGIN = 64  # descriptors beyond the connections: model files, logs, the prediction log
MAX_HEAD_BYTES = 64 * 1024  # request line + headers; real clients send well under 8 KB
# Header fields in one request (Apache's LimitRequestFields default; real clients send ~10-30).
# Each field costs a Python call on the event loop: 10,000 tiny headers (~140 KB, refused at 64 KB
# only after ~4,600 calls) used to slow /predict 2.4x for everyone while a client repeated them.
MAX_HEADERS = 100


def _raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete response in the service's error shape, for answers given before the app runs."""
    body = json.dumps({"error": {"code": code, "message": message, "details": None}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_TOO_LARGE = _raw_error(
    431,
    "Request Header Fields Too Large",
    "headers_too_large",
    f"the request line and headers exceed {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} header fields",
)
_header_timeout_s: float | None = None


def set_header_timeout(seconds: float) -> None:
    """Set by the entry point; worker processes started by uvicorn read the settings instead."""
    global _header_timeout_s
    _header_timeout_s = seconds


def header_timeout() -> float:
    global _header_timeout_s
    if _header_timeout_s is None:
        _header_timeout_s = load_settings().serving.header_timeout_s
    return _header_timeout_s


class _HeaderDeadlineMixin:
    """Close the connection if no request is in progress when the deadline passes."""

    _deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _head_fields = 0
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to unparseable HTTP, in our error shape instead of plain text."""
        if self.transport.is_closing():
            return
        if self._head_bytes > MAX_HEAD_BYTES or self._head_fields > MAX_HEADERS:
            self.transport.write(_TOO_LARGE)
        else:
            self.transport.write(_raw_error(400, "Bad Request", "bad_request", msg[:200]))
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_later(header_timeout(), self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if self._idle() and not self.transport.is_closing():
            self.transport.close()


class H11HeaderDeadline(_HeaderDeadlineMixin, H11Protocol):
    """uvicorn's h11 protocol with the header deadline."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsHeaderDeadline(_HeaderDeadlineMixin, HttpToolsProtocol):
        """uvicorn's httptools protocol (its default when installed), with the header deadline
        and bounds on the head (httptools has none; h11 has h11_max_incomplete_event_size)."""

        def on_message_begin(self) -> None:
            self._head_bytes = 0
            self._head_fields = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._grow_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_fields += 1
            self._grow_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _grow_head(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEAD_BYTES or self._head_fields > MAX_HEADERS:
                raise ValueError("request head too large")  # httptools stops: a 431 (see above)

    HeaderDeadline: type[asyncio.Protocol] = HttpToolsHeaderDeadline
except ImportError:  # httptools is optional: uvicorn falls back to h11 the same way
    HeaderDeadline = H11HeaderDeadline


def raise_fd_limit(connections: int) -> int:
    """Lift the soft descriptor limit towards ``connections`` + a margin; return the usable one.

    Idle sockets used to exhaust the default 1,024 descriptors and take /health down with them.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + FD_MARGIN
    if soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
        soft = new_soft
    return soft


def uvicorn_options(serving: ServingSettings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` that enforce the configured connection limits."""
    usable = raise_fd_limit(serving.max_connections)
    connections = min(serving.max_connections, max(1, usable - FD_MARGIN))
    if connections < serving.max_connections:
        log.warning(
            "serving.max_connections lowered to %d: the descriptor limit is %d",
            connections,
            usable,
        )
    return {
        "http": HeaderDeadline,
        "timeout_keep_alive": serving.keep_alive_s,
        "limit_concurrency": connections,  # beyond it: 503 at once, before any work
        "h11_max_incomplete_event_size": 16 * 1024,  # request line + headers, when h11 runs
    }
