"""A partner's backend for relay tests: a real HTTP server on loopback that records every
request it gets and answers as it is told."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    started: float
    ended: float
    port: int = 0  # the bridge's end of the connection it came over


@dataclass
class Partner:
    """``answer(received)`` gives the status code and ``headers(received)`` the answer's headers;
    ``delay`` holds each answer that long."""

    url: str = ""
    answer: Callable[[Received], int] = lambda received: 200
    headers: Callable[[Received], dict[str, str]] = lambda received: {}
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The requests received, once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"the partner got {len(self.received)} requests, not {count}")

    async def arrived(self, count: int, timeout: float = 20.0) -> list[Received]:
        """:meth:`wait_for` for a test whose event loop runs the bridge meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            await asyncio.sleep(0.02)
        raise AssertionError(f"the partner got {len(self.received)} requests, not {count}")

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)


@contextmanager
def recording_partner() -> Iterator[Partner]:
    partner = Partner()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps the connection, as a partner's server would

        def do_POST(self) -> None:  # noqa: N802 - the standard library's name
            started = time.monotonic()
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if partner.delay:
                time.sleep(partner.delay)
            headers = {name.lower(): value for name, value in self.headers.items()}
            pending = Received(
                self.path, headers, body, started, time.monotonic(), self.client_address[1]
            )
            status = partner.answer(pending)
            partner.record(pending)
            self.send_response(status)
            for name, value in partner.headers(pending).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    partner.url = f"http://127.0.0.1:{server.server_address[1]}/smart-glocal"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield partner
    finally:
        server.shutdown()
        server.server_close()
