"""The request head is refused after a bounded number of parser callbacks (issue 12).

Each header field costs a Python call on the event loop. 10,000 tiny headers used to cost ~4,600
calls before the 64 KB head limit refused them (and slowed /predict 2.4x for everyone while one
client repeated them); now the 101st field ends it. Counted in callbacks, not timed.
"""

from __future__ import annotations

import asyncio

import pytest

from financemath_mlops.serving import server
from financemath_mlops.serving.server import MAX_HEAD_BYTES, MAX_HEADERS

pytest.importorskip("httptools")


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(name)


async def _app(scope, receive, send) -> None:  # never reached: the head is refused first
    raise AssertionError("the app ran")


def _feed(head: bytes) -> tuple[int, bytes]:
    """Feed ``head`` to the service's protocol; the header callbacks it ran and what it wrote."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    calls = 0

    class Counting(server.HttpToolsHeaderDeadline):
        def on_header(self, name: bytes, value: bytes) -> None:
            nonlocal calls
            calls += 1
            super().on_header(name, value)

    loop = asyncio.new_event_loop()
    try:
        server.set_header_timeout(10.0)
        config = Config(app=_app, log_config=None, lifespan="off")
        protocol = Counting(config, ServerState(), {}, _loop=loop)
        transport = Transport()
        protocol.connection_made(transport)
        protocol.data_received(head)
        protocol.connection_lost(None)
        assert transport.closed
        return calls, transport.written
    finally:
        loop.close()


def _head(headers: dict[str, str]) -> bytes:
    lines = ["GET /health HTTP/1.1", "Host: x", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_ten_thousand_headers_stop_after_the_field_limit() -> None:
    calls, written = _feed(_head({f"X-{i}": "1" for i in range(10_000)}))
    assert written.startswith(b"HTTP/1.1 431 ")
    assert calls == MAX_HEADERS + 1  # the old bound (bytes only) allowed ~4,600


def test_a_large_header_is_refused_by_its_size() -> None:
    calls, written = _feed(_head({"X-Big": "a" * (MAX_HEAD_BYTES + 1)}))
    assert written.startswith(b"HTTP/1.1 431 ")
    assert calls <= 2
