"""The HTTP server ``redirect-bridge serve`` runs: uvicorn with its httptools parser, bounded so
that no client can stall a worker.

uvicorn bounds some things itself: connections per worker (``limit_concurrency``, a 503 beyond)
and how long a keep-alive connection may sit idle. It bounds neither the size nor the time of a
request's head: httptools gathers a header that never ends in memory, joining its pieces over
and over (a worker grew by hundreds of MB and froze for seconds), and a connection that sends
half a head, or nothing at all, is never timed out. The protocol here adds what is missing:

- a request's head (request line and headers) is at most :data:`HEAD_MAX_BYTES`: beyond, 431
  and the connection ends; so are a chunked body's trailers and chunk extensions, which
  httptools gathers the same way;
- the head must be complete within :data:`HEAD_TIMEOUT` seconds of the connection being ready
  for it (opened, or the answer before it sent, on a keep-alive connection): else 408 and the
  connection ends, or it is closed when nothing of the head came;
- an answer sent before its request's body was all read ends the connection, so a body that
  comes slowly is cut off with its answer (Quart's ``BODY_TIMEOUT``, set in ``create_app``,
  bounds how long a route waits for a body before answering 408).

Two things the app may use, offered without the server knowing the app: a stop calls the
``on_shutdown`` hook ``serve`` passes in (so held long-polls answer at once), and every request's
scope offers the :data:`HANG_UP` extension (see :mod:`app.scope`).

It relies on uvicorn's ``HttpToolsProtocol`` internals: pyproject.toml bounds uvicorn's version,
and tests/test_hostile_clients.py runs each attack against a real ``serve``, so an upgrade that
breaks this fails there.
"""

from __future__ import annotations

import asyncio
import http
import resource
from collections.abc import Callable
from functools import partial
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# An ASGI extension: a dict in ``scope["extensions"]``, where the app may leave a future under
# ``"future"``; it is completed once the client hangs up before its answer is complete.
HANG_UP = "redirect_bridge.hang_up"

HEAD_MAX_BYTES = 32 * 1024  # nginx's default bound on a request's headers (4 buffers of 8 KB)
HEAD_TIMEOUT = 5  # seconds; as long as uvicorn's keep-alive timeout
MAX_CONNECTIONS = 12_000  # per worker: 10,000 held long-polls and the requests waking them
# A chunked body's framing takes up to 5 bytes for each byte of 1-byte chunks; more only with
# chunk extensions or trailers.
FRAMING_PER_BODY_BYTE = 8
# Once an answer ends a connection early, the connection is closed this long after it, and
# what the client sends meanwhile is read and dropped (up to this many bytes): closing at once
# with bytes unread would reset the connection, and a reset can destroy the answer before the
# client has read it.
LINGER_SECONDS = 2
LINGER_BYTES = 1024 * 1024
_SPARE_FILES = 256  # per worker, besides connections: database, metrics files, logs, the loop


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on each request head's size and time."""

    _head_deadline: asyncio.TimerHandle | None = None
    _head_begun = False  # some of the next request's head has come
    # Of the request being received: all its bytes, and those of its body. What is not body
    # (request line, headers, chunk sizes and extensions, trailers) is what httptools gathers.
    _received = 0
    _body_received = 0
    _lingering: asyncio.TimerHandle | None = None
    _dropped = 0

    def __init__(self, *args: Any, on_shutdown: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_shutdown = on_shutdown

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Timers stop; and a future the app left under :data:`HANG_UP` learns that its
        client hung up, so a held long-poll ends without a task of its own reading for it."""
        self._stop_head_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            gone = cycle.scope.get("extensions", {}).get(HANG_UP, {}).get("future")
            if isinstance(gone, asyncio.Future) and not gone.done():
                gone.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:
            self._dropped += len(data)
            if self._dropped > LINGER_BYTES:
                self.transport.pause_reading()  # read no more; the close comes on time
            return
        self._received += len(data)
        super().data_received(data)
        framing = self._received - self._body_received
        if (
            framing > HEAD_MAX_BYTES + FRAMING_PER_BODY_BYTE * self._body_received
            and not self.transport.is_closing()
        ):
            self.logger.warning("Request head over %d bytes: 431, closed.", HEAD_MAX_BYTES)
            self._refuse(431, "Request header fields too large.")

    def on_message_begin(self) -> None:
        self._head_begun = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._head_begun = False
        self._stop_head_deadline()
        self.scope["extensions"] = {**self.scope.get("extensions", {}), HANG_UP: {}}
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_received += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What comes next is the next request's (a read that holds both counts to neither).
        self._received = self._body_received = 0

    def shutdown(self) -> None:
        """The server is stopping: held long-polls and event streams answer now (uvicorn
        would cut them off when its graceful wait ends, as errors)."""
        self._on_shutdown()
        super().shutdown()

    def on_response_complete(self) -> None:
        latest = self.cycle  # the request parsed last; a pipelined one before it has its body
        if latest.response_complete and latest.more_body:
            # Answered before its body was all read: the rest is not waited for.
            self._linger()
        super().on_response_complete()
        if latest.response_complete and self._open():
            self._await_head()

    def _open(self) -> bool:
        """Whether the connection takes another request."""
        return self._lingering is None and not self.transport.is_closing()

    def _await_head(self) -> None:
        self._stop_head_deadline()
        self._head_deadline = self.loop.call_later(HEAD_TIMEOUT, self._head_timed_out)

    def _stop_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self._open():
            return
        if self._head_begun:
            self.logger.warning("Request head not complete in %d s: 408, closed.", HEAD_TIMEOUT)
            self._refuse(408, "Request head took too long.")
        else:
            self.transport.close()  # idle: nothing to answer

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` and close; only close if an answer is under way."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        body = message.encode()
        head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode()]
        defaults = self.server_state.default_headers  # Date and Server
        head += [name + b": " + value + b"\r\n" for name, value in defaults]
        head.append(
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        self.transport.write(b"".join(head) + body)
        self._linger()

    def _linger(self) -> None:
        """End the connection after what is written: send it and a FIN, drop what comes in
        (up to ``LINGER_BYTES``), and close ``LINGER_SECONDS`` later."""
        if not self._open():
            return
        self._stop_head_deadline()
        self._lingering = self.loop.call_later(LINGER_SECONDS, self.transport.close)
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()


def options(max_connections: int, on_shutdown: Callable[[], None]) -> dict[str, Any]:
    """uvicorn's settings for ``serve`` (all but the app, address and workers), with at most
    ``max_connections`` per worker; ``on_shutdown`` is called (once per open connection) when
    a worker begins to stop. bench/limit.py runs its bare ASGI callable with them too."""
    return {
        "http": partial(BoundedHttpToolsProtocol, on_shutdown=on_shutdown),
        "ws": "none",  # the bridge has no WebSocket routes: no upgrade is taken
        "limit_concurrency": max_connections + 1,  # uvicorn counts the one refused
        "timeout_keep_alive": HEAD_TIMEOUT,
        "proxy_headers": True,
        "log_config": None,  # serve configures logging itself (app/logs.py)
        "access_log": False,
        # Long-polls and event streams would hold a shutdown for minutes; their clients
        # reconnect to another instance or to this one restarted.
        "timeout_graceful_shutdown": 5,
    }


def fit_open_files(max_connections: int) -> int:
    """Raise this process's limit on open files (its workers inherit it) so that
    ``max_connections`` fit, as far as the hard limit allows; return how many connections fit.

    Beyond the limit a worker cannot accept a connection, let alone answer it 503: every other
    client is locked out (Debian's and systemd's default soft limit is 1,024 files)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + _SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return min(max_connections, max(soft - _SPARE_FILES, soft // 2))
