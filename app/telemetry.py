"""Every request's id and time, kept around the app at the ASGI layer.

The id is the caller's ``X-Request-ID`` when it is sane, else a new one; every log line written
while the request is handled carries it, and the answer echoes it. The time from the request's
arrival to its answer's first byte is observed per route, method and status code (for a stream,
the time until it starts); long-polls, held on purpose, are observed apart. One wrapper around
the app and one small hook, instead of Quart's request hooks around every request.
"""

from __future__ import annotations

import re
import time

from quart import Quart, request

from .current import mark
from .logs import new_request_id, with_request_id, without_request_id
from .metrics import Metrics
from .scope import LONG_POLL, ROUTE, ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_ACCEPTABLE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
# Any other method a client makes up is counted as one, so it cannot add series without end.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Telemetry:
    """ASGI middleware: ``app.asgi_app = Telemetry(app.asgi_app, metrics)``, with
    :func:`init_app` to learn each request's route."""

    def __init__(self, inner: ASGIApp, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._inner(scope, receive, send)
            return
        offered = next((value for name, value in scope["headers"] if name == HEADER), b"")
        request_id = offered.decode() if _ACCEPTABLE_ID.fullmatch(offered) else new_request_id()
        timed = _Timed(send, scope, self._metrics, request_id)
        # Not a context manager: a held long-poll would keep its generator alive.
        token = with_request_id(request_id)
        try:
            await self._inner(scope, receive, timed)
        finally:
            without_request_id(token)


class _Timed:
    """``send``, timing the answer's start and echoing the request id (an object with slots,
    not a closure: a held long-poll keeps it, and a closure's cells take more memory)."""

    __slots__ = ("_send", "_scope", "_metrics", "_request_id", "_started")

    def __init__(self, send: Send, scope: Scope, metrics: Metrics, request_id: str) -> None:
        self._send, self._scope, self._metrics = send, scope, metrics
        self._request_id = request_id
        self._started = time.perf_counter()

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            echoed = (HEADER, self._request_id.encode())
            message = {**message, "headers": [*message.get("headers", ()), echoed]}
            seconds = time.perf_counter() - self._started
            scope = self._scope
            if scope.get(LONG_POLL):
                self._metrics.time_long_poll(seconds)
            else:
                method = scope["method"] if scope["method"] in _METHODS else "other"
                route = scope.get(ROUTE, "unmatched")
                self._metrics.time_route(route, method, message["status"], seconds)
        await self._send(message)


def init_app(app: Quart) -> None:
    app.before_request(_note_route)


async def _note_route() -> None:
    """Leave the matched route where the middleware will find it (the request's scope is the
    one the middleware was called with)."""
    rule = request.url_rule
    mark(ROUTE, rule.rule if rule else "unmatched")
