"""Hostile HTTP requests with the status each must get, and a raw-socket client to send them.

Shared by tests/hostile/test_corpus.py (every case, once, against a real server) and
benchmarks/attack.py (each case in a bounded loop while a second client measures latency).
Raw sockets, so the bytes are exactly what an attacker would send; ``sendall`` before reading is
what Python's ``http.client`` and ``requests`` do, so the 413 cases also cover defect 5. Cases
assume the default request limits (``serving.max_body_bytes`` 1 MB, 10 tables, 64 items).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

CLOSED = None  # expected "status" of a connection the server closes without an answer


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], bytes]  # the raw bytes to send (built lazily: some are megabytes)
    expect: int | None  # the status, or CLOSED
    issue_defect: int | None = None  # the numbered defect of issue 12 it reproduces
    max_response_bytes: int = 64_000  # error and warning bodies stay small (defect 4)
    # A valid request whose cost is real work (issue 12's latency targets exclude valid
    # maximum-size requests): the benchmark reports its /predict p99 but judges only the rest.
    # A client sending them back to back shares the worker with the probe as any second client
    # would: the probe waits for its prediction, then runs its own (~2x by construction).
    valid_work: bool = False


@dataclass
class Outcome:
    status: int | None
    body: bytes
    seconds: float


def request(
    method: str,
    path: str,
    body: bytes = b"",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if body or length is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body) if length is None else length}"]  # fmt: skip
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def post(path: str, payload: object, **kwargs: object) -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return request("POST", path, body, **kwargs)  # type: ignore[arg-type]


def ragged_table(width: int, rows: int) -> str:
    """The shape of defect 2: a wide header, then one-cell rows the old parser padded to it."""
    return "\n".join(["|" + "a|" * width, "|---|", *(["|x|"] * rows)])


MANY_HEADERS = {f"X-{i}": "1" for i in range(10_000)}
QUESTION = "What is the present value of $1,000 received in 3 years at 5%?"


def _escaped_quotes() -> bytes:
    return post("/predict", b'{"question": "' + b'\\"' * 490_000)  # unterminated, ~1 MB


def _wrong_items() -> bytes:
    return post("/predict/batch", b'{"items": [' + b",".join([b"1"] * 400_000) + b"]}")


def _extra_keys() -> bytes:
    return post("/predict", {"question": QUESTION, **{f"k{i}": 1 for i in range(60_000)}})


def _ragged_request() -> bytes:
    return post("/predict", {"question": QUESTION, "tables": [ragged_table(1_500, 4_000)]})  # 19 KB


def _ragged_batch() -> bytes:
    item = {"question": QUESTION, "tables": [ragged_table(200, 300)] * 10}
    return post("/predict/batch", {"items": [item] * 40})  # ~950 KB, within the body limit


def _capped_details() -> bytes:
    item = {"question": QUESTION, "tables": [""] * 11}  # one problem per item: 64 problems
    return post("/predict/batch", {"items": [item] * 64})


CASES: list[Case] = [
    Case("escaped quotes, 1 MB, unterminated", _escaped_quotes, 400, issue_defect=1),
    Case("nested 100 deep", lambda: post("/predict", b"[" * 100 + b"]" * 100), 400),
    Case("500,000 unclosed brackets", lambda: post("/predict", b"[" * 500_000), 400),
    Case("ragged table at the table limit", _ragged_request, 200, issue_defect=2, valid_work=True),
    Case(
        "batch of ragged tables",
        _ragged_batch,
        200,
        issue_defect=2,
        max_response_bytes=120_000,
        valid_work=True,
    ),
    Case("400,000 wrong items", _wrong_items, 400, issue_defect=4),
    Case("60,000 extra keys", _extra_keys, 400, issue_defect=4),
    Case("64 invalid items", _capped_details, 422, issue_defect=4),
    Case("65 items", lambda: post("/predict/batch", {"items": [{"question": "q"}] * 65}), 422),
    Case("11 tables", lambda: post("/predict", {"question": "q", "tables": ["|a|"] * 11}), 422),
    Case(
        "5 MB body, sent whole before reading",
        lambda: post("/predict", b'{"question": "' + b"a" * 5_000_000 + b'"}'),
        413,
        issue_defect=5,
    ),
    Case(
        "50 MB declared, nothing sent", lambda: request("POST", "/predict", length=50_000_000), 413
    ),  # fmt: skip
    Case(
        "5 MB declared with Expect: 100-continue",
        lambda: request("POST", "/predict", length=5_000_000, headers={"Expect": "100-continue"}),
        413,
    ),
    Case(
        "body slower than the body deadline",
        lambda: request("POST", "/predict", b'{"question": ', length=1_000),
        408,
        issue_defect=3,
    ),
    Case("idle connection", lambda: b"", CLOSED, issue_defect=3),
    Case("half a request line", lambda: b"POST /predict HT", CLOSED, issue_defect=3),
    Case("headers never finished", lambda: b"GET /health HTTP/1.1\r\nHost: x\r\n", CLOSED, 3),
    Case("100 KB header", lambda: request("GET", "/health", headers={"X-Big": "a" * 100_000}), 431),
    Case("10,000 headers", lambda: request("GET", "/health", headers=MANY_HEADERS), 431),
    Case("Content-Length not a number", lambda: request("POST", "/predict", length="x"), 400),  # type: ignore[arg-type]  # fmt: skip
    Case("not UTF-8", lambda: post("/predict", b'{"question": "\xff\xfe"}'), 400),
    Case("not JSON", lambda: post("/predict", b'{"question": '), 400),
    Case("lone surrogate", lambda: post("/predict", b'{"question": "\\ud800"}'), 422),
    Case(
        "text/plain body",
        lambda: post("/predict", {"question": "q"}, content_type="text/plain"),
        415,
    ),  # fmt: skip
    Case("DELETE /health", lambda: request("DELETE", "/health"), 405),
    Case("unknown path", lambda: request("GET", "/../../etc/passwd"), 404),
]


def send(port: int, raw: bytes, timeout: float = 60.0) -> Outcome:
    """Send everything, then read one response (or see the connection closed without one)."""
    started = time.perf_counter()
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            while not _complete(data):
                chunk = sock.recv(65_536)
                if not chunk:
                    break
                data += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass  # counted below as no (or a partial) answer
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    body = data.partition(b"\r\n\r\n")[2]
    return Outcome(status, body, time.perf_counter() - started)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False  # no length: read until the server closes
