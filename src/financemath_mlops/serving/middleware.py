"""Two small pure-ASGI middlewares (no BaseHTTPMiddleware: it buffers and adds a task per request).

:class:`RequestContext` gives every request an id (a sane ``X-Request-ID`` or a new one), echoes
it, counts and times the request for Prometheus, and turns anything that escaped the app into our
500 shape. :class:`BodyGuard` reads request bodies within a byte budget and a deadline (413, 408),
and rejects non-UTF-8 or too deeply nested JSON (400) before FastAPI parses it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
import numpy as np
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from financemath_mlops.config import ServingSettings
from financemath_mlops.serving.error_responses import error_payload

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
MAX_JSON_DEPTH = 32
SCAN_INLINE_BYTES = 64 * 1024
SCAN_BLOCK_BYTES = 64 * 1024
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_METHODS = {"GET", "HEAD", "OPTIONS", "TRACE", *_BODY_METHODS}


class RequestIds:
    """Random 128-bit request ids (32 hex digits, as ``uuid4().hex`` had them), drawn from
    ``os.urandom`` 256 at a time: a syscall per id was 3 % of the event loop's time a /predict.
    Used by the event loop only (one thread), so the buffer needs no lock; a forked child
    starts with an empty one, so two processes never hand out the same ids."""

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self.reset()

    def reset(self) -> None:
        self._pool = b""
        self._next = 0

    def new(self) -> str:
        if self._next >= len(self._pool):
            self._pool, self._next = os.urandom(16 * self._batch), 0
        start, self._next = self._next, self._next + 16
        return self._pool[start : self._next].hex()


REQUEST_IDS = RequestIds()
os.register_at_fork(after_in_child=REQUEST_IDS.reset)


def client_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The caller's X-Request-ID when it is sane, else None.

    It is kept beside ours, never instead of it: two clients sending the same id must not share
    one id in our logs.
    """
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_ID.match(text) else None
    return None


class JsonShape(NamedTuple):
    depth: int  # deepest nesting of arrays/objects
    values: int  # array elements and object members, at most (commas outside strings + 1)
    # Proven not JSON: a string left open, or brackets that do not balance (only known when the
    # scan went to the end; a scan stopped at a limit says False).
    malformed: bool = False


def json_shape(
    body: bytes,
    max_depth: int | None = None,
    max_values: int | None = None,
    yield_between_blocks: bool = False,
) -> JsonShape:
    """Nesting depth and value count of a JSON body, in a fixed number of linear passes.

    Every pass is a vectorised scan over the bytes (replace, a parity prefix-sum, comparisons,
    a cumsum over the brackets): no regex, no per-match objects, so time and memory grow
    linearly with ``len(body)`` whatever the bytes are (the old string regex went quadratic on
    ``"`` followed by many ``\\"`` and froze the event loop). Escape pairs go first, so every
    ``"`` left is a string delimiter and a byte is inside a string when an odd number of them
    precede it (an unterminated string runs to the end). Unbalanced brackets count as they open
    (``[[[`` is 3).

    The scan goes by blocks of :data:`SCAN_BLOCK_BYTES`, escapes included (a backslash left
    unpaired at the end of a block escapes the first byte of the next); with ``max_depth`` /
    ``max_values`` it stops after the first block that exceeds one, and the shape it returns is
    then only known to exceed it: a megabyte of commas is refused after its first block, not its
    last. ``yield_between_blocks`` (on a worker thread) lets go of the GIL after each block:
    ``bytes.replace`` holds it, and a megabyte of escapes is ~5 ms the event loop would wait.
    """
    depth = deepest = lowest = commas = 0
    in_string_before = False  # whether the block starts inside a string
    escaped_next = False  # the previous block ended with an unpaired backslash
    scanned = 0
    for start in range(0, len(body), SCAN_BLOCK_BYTES):
        if yield_between_blocks and start:
            time.sleep(0)  # let go of the GIL: the event loop runs between blocks
        chunk = body[start : start + SCAN_BLOCK_BYTES]
        scanned = start + len(chunk)
        if escaped_next:
            chunk, escaped_next = chunk[1:], False
        if b"\\" in chunk:
            chunk = chunk.replace(b"\\\\", b"")
            if chunk.endswith(b"\\"):
                chunk, escaped_next = chunk[:-1], True
            chunk = chunk.replace(b'\\"', b"")
        if not chunk:
            continue
        block = np.frombuffer(chunk, dtype=np.uint8)
        in_string = np.logical_xor.accumulate(block == ord('"'))
        if in_string_before:
            np.logical_not(in_string, out=in_string)
        in_string_before = bool(in_string[-1])
        opens = (block == ord("[")) | (block == ord("{"))
        closes = (block == ord("]")) | (block == ord("}"))
        steps = opens.view(np.int8) - closes.view(np.int8)  # +1 opens, -1 closes, 0 the rest
        steps[in_string] = 0
        levels = np.cumsum(steps[np.flatnonzero(steps)], dtype=np.int32)  # at each bracket
        if len(levels):
            deepest = max(deepest, depth + int(levels.max()))
            lowest = min(lowest, depth + int(levels.min()))
            depth += int(levels[-1])
        commas += int(np.count_nonzero((block == ord(",")) & ~in_string))
        if (max_depth is not None and deepest > max_depth) or (
            max_values is not None and commas + 1 > max_values
        ):
            break
    if scanned == 0:
        return JsonShape(0, 0)
    malformed = scanned == len(body) and (in_string_before or depth != 0 or lowest < 0)
    return JsonShape(deepest, commas + 1, malformed)


def within_limits(body: bytes, max_depth: int, max_values: int) -> bool:
    """True when a small body cannot break either limit, whatever its strings hold: every ``[``
    and ``{`` counted (depth is at most that) and every ``,`` (values at most that + 1).

    Four ``bytes.count`` passes (C, no allocation): ~1 us against :func:`json_shape`'s ~34 us on
    the serving benchmark's /predict bodies, which all pass it; a batch (a bracket pair per
    item) or a body that fails it gets the exact scan. Not for large bodies: they get the scan,
    which also proves a megabyte malformed before anything parses it.
    """
    if len(body) >= SCAN_INLINE_BYTES:
        return False
    opens = body.count(b"[") + body.count(b"{")
    return opens <= max_depth and body.count(b",") + 1 <= max_values


def json_depth(body: bytes) -> int:
    return json_shape(body).depth


def max_json_values(limits: ServingSettings) -> int:
    """More values than the largest valid batch can hold (items x (fields + tables), generously).

    Checked before parsing: pydantic spends ~35 us per wrong value, so a 1 MB body of 400,000
    wrong items held the event loop for seconds just to describe them.
    """
    return limits.max_batch * (limits.max_tables + 8) + 64


async def send_error(
    scope: Scope, send: Send, status: int, code: str, message: str, headers: Any = None
) -> None:
    """Answer in our error shape from ASGI code (outside FastAPI's exception handlers)."""
    scope.setdefault("state", {})["error_code"] = code
    body = json.dumps(error_payload(code, message)).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class RequestContext:
    """Request id, Prometheus request metrics, refusal pacing, and a last-resort 500 in our
    error shape.

    Refusal pacing: a 4xx answer is sent ``refusal_pace`` times the time its request took later
    (at most ``refusal_pace_max_s``). A client that sends one refused request after another
    (1 MB of junk JSON costs the event loop ~8 ms to read and refuse) then holds the loop at
    most 1/(1 + pace) of the time, and the predictions of everyone else keep their CPU; a
    client that sends a valid request never waits. The wait is a sleep: it holds a connection
    (bounded by ``max_connections``), not the CPU.
    """

    def __init__(
        self,
        app: ASGIApp,
        metrics: Callable[[], Any],
        limits: Callable[[], ServingSettings | None] = lambda: None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limits = limits
        self._paths: set[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = REQUEST_IDS.new()
        theirs = client_request_id(scope.get("headers", []))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_request_id"] = theirs
        state["started_at"] = started
        id_header = (b"x-request-id", request_id.encode())
        id_headers = [id_header]
        if theirs is not None:
            id_headers.append((b"x-client-request-id", theirs.encode()))
        status = 500
        response_started = False
        metrics = self.metrics()

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), *id_headers]
                if 400 <= status < 500:
                    await _pace_refusal(self.limits(), time.perf_counter() - started)
            await send(message)

        if metrics is not None:
            metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            if not response_started:
                status = 499  # the client went away (nginx's convention)
            raise
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            if not response_started:
                status = 500
                await send_error(
                    scope,
                    send,
                    500,
                    "internal_error",
                    f"internal error; quote request id {request_id} when reporting it",
                    id_headers,
                )
        finally:
            if metrics is not None:
                metrics.in_flight.dec()
                endpoint = self._endpoint(scope)
                method = scope["method"] if scope["method"] in _METHODS else "other"
                metrics.requests.labels(endpoint, method, str(status)).inc()
                metrics.request_latency.labels(endpoint).observe(time.perf_counter() - started)
                if status >= 400:
                    code = scope["state"].get("error_code") or f"http_{status}"
                    metrics.errors.labels(code).inc()

    def _endpoint(self, scope: Scope) -> str:
        """The route template (bounded label values), also for requests stopped before routing."""
        route = scope.get("route")
        if route is not None and getattr(route, "path", None):
            return route.path
        if self._paths is None:
            app = scope.get("app")
            routes = getattr(app, "routes", [])
            self._paths = {r.path for r in routes if "{" not in getattr(r, "path", "{")}
        return scope["path"] if scope["path"] in self._paths else "unmatched"


async def _pace_refusal(limits: ServingSettings | None, took_s: float) -> None:
    """Hold a refusal back ``refusal_pace`` times what its request took (see RequestContext)."""
    if limits is not None and limits.refusal_pace > 0:
        await asyncio.sleep(min(limits.refusal_pace_max_s, limits.refusal_pace * took_s))


class BodyGuard:
    """Read request bodies within a byte budget and a deadline; check basic JSON sanity.

    Over ``max_body_bytes``: 413, after reading and dropping up to ``max_drain_bytes`` of the body,
    so clients that send the whole body before reading (Python's ``http.client``, ``requests``)
    read the 413 instead of a reset connection. Slower than ``body_timeout_s``: 408. Not UTF-8,
    or nested deeper than ``max_depth``: 400, before FastAPI parses it. The byte budget and the
    deadline bound what one request can hold: memory, and a worker's time.
    """

    def __init__(
        self,
        app: ASGIApp,
        limits: Callable[[], ServingSettings],
        max_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.app = app
        self.limits = limits
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limits = self.limits()
        declared = _content_length(scope)
        if declared == -1:
            await send_error(
                scope, send, 400, "bad_request", "Content-Length is not a valid number"
            )
            return
        body = await _read_body(scope, receive, limits, declared)
        if body is None:  # the client left
            return
        if body == 413:
            await _too_large(scope, send, limits.max_body_bytes)
            return
        if body == 408:
            message = f"the request body did not arrive within {limits.body_timeout_s:g} s"
            await send_error(scope, send, 408, "request_timeout", message, _CLOSE)
            return
        assert isinstance(body, bytes)
        problem = await self._problem(body, scope, limits)
        if problem is not None:
            await send_error(scope, send, *problem)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _problem(
        self, body: bytes, scope: Scope, limits: ServingSettings
    ) -> tuple[int, str, str] | None:
        if not body:
            return None
        if not _is_json(scope):
            return (
                415,
                "unsupported_media_type",
                "send the body as JSON (Content-Type: application/json)",
            )
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (
                400,
                "invalid_encoding",
                f"the request body is not valid UTF-8 (byte {exc.start})",
            )
        limited = (body, self.max_depth, max_json_values(limits))
        if within_limits(*limited):
            return None  # cannot break a limit; a malformed small body is the parser's 400
        if len(body) < SCAN_INLINE_BYTES:
            shape = json_shape(*limited)
        else:  # ~5-10 ms for 1 MB: on a thread, so the event loop keeps answering meanwhile
            shape = await anyio.to_thread.run_sync(json_shape, *limited, True)
        if shape.depth > self.max_depth:
            return 400, "too_deep", f"the JSON body is nested deeper than {self.max_depth} levels"
        if shape.values > max_json_values(limits):
            return (
                400,
                "too_many_values",
                f"the JSON body holds at least {shape.values} values; a valid request holds at most "
                f"{max_json_values(limits)} (serving.max_batch items of serving.max_tables tables)",
            )
        if shape.malformed:  # refused here: parsing a megabyte to find out costs ~4 ms
            return (
                400,
                "invalid_json",
                "the request body is not valid JSON: a string is left open or the brackets "
                "do not balance",
            )
        return None


_CLOSE = [(b"connection", b"close")]


async def _read_body(
    scope: Scope, receive: Receive, limits: ServingSettings, declared: int | None
) -> bytes | int | None:
    """The whole body, or the status that refuses it (413, 408), or None if the client left."""
    refusal = 408
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            if declared is not None and declared > limits.max_body_bytes:
                refusal = 413
                if declared > limits.max_drain_bytes or _expects_continue(scope):
                    return 413  # too big to drain, or the client waits for our answer first
                return await _drain(receive, 0, limits.max_drain_bytes)
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                more = message.get("more_body", False)
                if size > limits.max_body_bytes:
                    refusal = 413
                    return await _drain(receive, size, limits.max_drain_bytes) if more else 413
                chunks.append(chunk)
                if not more:
                    return b"".join(chunks)
    except TimeoutError:
        return refusal


async def _drain(receive: Receive, seen: int, budget: int) -> int | None:
    """Read and drop the rest of an oversized body (up to ``budget`` bytes in all); then 413."""
    while seen <= budget:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        seen += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return 413


def _expects_continue(scope: Scope) -> bool:
    return any(
        name == b"expect" and value.lower() == b"100-continue"
        for name, value in scope.get("headers", [])
    )


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or (
                media.startswith(b"application/") and media.endswith(b"+json")
            )
    return False


def _content_length(scope: Scope) -> int | None:
    """The declared length, None when absent, -1 when unreadable."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                return -1
            return length if length >= 0 else -1
    return None


async def _too_large(scope: Scope, send: Send, limit: int) -> None:
    await send_error(
        scope,
        send,
        413,
        "payload_too_large",
        f"the request body is larger than {limit} bytes; send fewer or smaller items",
        _CLOSE,
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
