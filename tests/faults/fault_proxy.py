"""A small TCP fault proxy of our own, switchable at run time: the faults a store's network shows.

It sits between a client and a real server (the tracking server, moto's S3 API) on 127.0.0.1 and
relays bytes unchanged until the test switches its mode:

- ``pass``: relay both ways (the default);
- ``refuse``: the listening socket is closed, so a connection is refused (``ECONNREFUSED``), as
  on a host where nothing listens; switching back listens again on the same port;
- ``hang``: connections are accepted and what the client sends is read and dropped, but nothing is
  ever answered (a store whose process is wedged, or a load balancer with a dead backend);
  connections already open stop relaying too;
- ``slow``: every request waits ``seconds`` before it is forwarded (a request is what the client
  sends after the server's last answer on that connection);
- ``cut``: a connection is closed once one request has sent ``after_bytes`` bytes upstream: an
  upload larger than that is cut half-way, every time (retries included), smaller requests pass.

``on_request(*patterns, action=...)`` runs ``action()`` in the relaying thread before forwarding
the first request whose bytes hold one of ``patterns`` (once), holding that request until it returns: how a
test injects a fault at an exact point of a client's conversation (stop PostgreSQL just before
the alias move), with no sleep and no race. Requests seen are kept (their first line) for the
test to assert on. Threads only; stopped by :meth:`stop` (or as a context manager).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MODES = ("pass", "refuse", "hang", "slow", "cut")
CHUNK = 65536
METHODS = {b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE", b"OPTIONS"}


@dataclass
class _Trigger:
    patterns: tuple[bytes, ...]
    action: Callable[[], object]
    claimed: bool = False
    fired: threading.Event = field(default_factory=threading.Event)


class FaultProxy:
    """``FaultProxy(upstream_port)``: listens on a free port of 127.0.0.1 (:attr:`port`)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = "pass"
        self.seconds = 0.0
        self.after_bytes = 0
        self.requests: list[str] = []  # first line of every request forwarded (or held)
        self.cuts = 0  # connections closed by `cut`
        self.accepted: list[float] = []  # time.monotonic() of every connection accepted
        self.hung: list[tuple[float, float]] = []  # (accepted, client gave up) under `hang`
        self._lock = threading.Lock()
        self._triggers: list[_Trigger] = []
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._generation = 0  # bumped on every mode switch: connections re-read the mode
        self.port = self._listen(0)
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True, name="fault-proxy")
        self._acceptor.start()

    # -- what the test calls -------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def set_mode(self, mode: str, *, seconds: float = 0.0, after_bytes: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}: one of {', '.join(MODES)}")
        with self._lock:
            was = self.mode
            self.mode, self.seconds, self.after_bytes = mode, seconds, after_bytes
            self._generation += 1
        if mode == "refuse" and was != "refuse":
            self._close_listener()
        elif mode != "refuse" and was == "refuse":
            self._listen(self.port)
        if mode == "refuse":
            self._drop_open()  # a server that went away: open connections are reset too
        # hang: open connections stop relaying (see _relay), kept open and unanswered

    def on_request(self, *patterns: bytes | str, action: Callable[[], object]) -> threading.Event:
        """Run ``action`` once, before the first request holding any of ``patterns`` (in its
        first 4 KiB: request line, headers, the start of the body) goes upstream; returns an
        event set once it ran."""
        encoded = tuple(p.encode() if isinstance(p, str) else p for p in patterns)
        trigger = _Trigger(encoded, action)
        with self._lock:
            self._triggers.append(trigger)
        return trigger.fired

    def clear_triggers(self) -> None:
        """Drop the ``on_request`` actions that never ran (a row that failed before its trigger
        must not fire it in a later row: the stack is shared by the session)."""
        with self._lock:
            self._triggers.clear()

    def seen(self, fragment: str) -> int:
        """How many requests forwarded so far held ``fragment`` in their first line."""
        with self._lock:
            return sum(fragment in line for line in self.requests)

    def stop(self) -> None:
        self._stopped.set()
        self._close_listener()
        self._drop_open()
        self._acceptor.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the machinery -------------------------------------------------------------------
    def _listen(self, port: int) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        return listener.getsockname()[1]

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes a blocked accept(): no longer listening
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()

    def _drop_open(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(time.monotonic())
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open.update(socks)

    def _serve(self, client: socket.socket) -> None:
        self._track(client)
        if self.mode == "hang":
            self._swallow(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            client.close()
            return
        self._track(upstream)
        try:
            self._relay(client, upstream)
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._open.discard(client)
                self._open.discard(upstream)

    def _swallow(self, client: socket.socket) -> None:
        """Read and drop everything; never answer (until the proxy stops or the client leaves:
        when it gave up is kept in :attr:`hung`, the client's own timeout seen from outside)."""
        started = time.monotonic()
        with contextlib.suppress(OSError):
            client.settimeout(0.5)
            while not self._stopped.is_set():
                try:
                    if not client.recv(CHUNK):
                        with self._lock:
                            self.hung.append((started, time.monotonic()))
                        break
                except TimeoutError:
                    continue
        with contextlib.suppress(OSError):
            client.close()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        sent_up = 0
        new_request = True  # the next client bytes start a request
        while not self._stopped.is_set():
            if self.mode == "hang":
                self._swallow(client)
                return
            try:
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
            except (OSError, ValueError):
                return
            for sock in readable:
                try:
                    data = sock.recv(CHUNK)
                except OSError:
                    return
                if not data:
                    return
                if sock is upstream:
                    new_request = True
                    try:
                        client.sendall(data)
                    except OSError:
                        return
                    continue
                if new_request and data[:8].split(b" ", 1)[0] in METHODS:
                    new_request, sent_up = False, 0
                    data = self._whole_head(client, data)
                    self._before_request(data)
                    if self.mode == "hang":
                        self._swallow(client)
                        return
                if self.mode == "cut" and sent_up + len(data) > self.after_bytes:
                    keep = max(0, self.after_bytes - sent_up)
                    with contextlib.suppress(OSError):
                        upstream.sendall(data[:keep])
                    with self._lock:
                        self.cuts += 1
                    return
                try:
                    upstream.sendall(data)
                except OSError:
                    return
                sent_up += len(data)

    def _whole_head(self, client: socket.socket, data: bytes) -> bytes:
        """The request's headers and up to 2 KiB of its body (a client may send them in two
        writes), so that a trigger can match a name in a JSON body; waits at most 0.5 s."""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and value.strip().isdigit():
                        length = int(value.strip())
                expect = b"100-continue" in head.lower()  # the body follows the server's go
                if expect or len(body) >= min(length, 2048):
                    return data
            readable, _, _ = select.select([client], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                return data
            more = client.recv(CHUNK)
            if not more:
                return data
            data += more
        return data

    def _before_request(self, data: bytes) -> None:
        line = data.split(b"\r\n", 1)[0][:200].decode("latin-1")
        with self._lock:
            self.requests.append(line)
            due = [
                t
                for t in self._triggers
                if not t.claimed and any(p in data[:4096] for p in t.patterns)
            ]
            for trigger in due:
                trigger.claimed = True  # once, even while the action runs
        for trigger in due:
            try:
                trigger.action()
            finally:
                trigger.fired.set()
        if self.mode == "slow" and self.seconds > 0:
            time.sleep(self.seconds)
