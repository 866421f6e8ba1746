"""Every request's id and time, kept around the app at the ASGI layer.

The id is the caller's ``X-Request-ID`` when it is sane, else a new one; every log line written
while the request is handled carries it, and the answer echoes it. The time from the request's
arrival to its answer's first byte is observed per route, method and status code (for a stream,
the time until it starts); long-polls, held on purpose, are observed apart. One wrapper and one
small hook instead of four Quart hooks, which with their own work were some 7% of the status
route's time under load.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Quart, request

from .logs import new_request_id, with_request_id, without_request_id
from .metrics import Metrics

HEADER = b"x-request-id"
_ACCEPTABLE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
# Any other method a client makes up is counted as one, so it cannot add series without end.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ROUTE = "redirect_bridge.route"  # where the matched route is left in the ASGI scope
LONG_POLL = "redirect_bridge.long_poll"  # set in the scope by a view that holds its answer
KEEP_PAGE = "redirect_bridge.keep_page"  # set by a view whose page app.front may send again
# Present in the scope when the server completes a future left under it as the client hangs up
# (serve's protocol, app/server.py): app.front then needs no task to watch for it.
HUNG_UP = "redirect_bridge.hung_up"

Scope = dict[str, Any]


class Telemetry:
    """ASGI middleware: ``app.asgi_app = Telemetry(app, metrics)``."""

    def __init__(self, app: Quart, metrics: Metrics) -> None:
        self._inner: Callable[[Scope, Any, Any], Awaitable[None]] = app.asgi_app  # type: ignore[assignment]
        self._metrics = metrics
        app.before_request(_note_route)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
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
    not a closure: a held long-poll keeps it, and a closure's cells cost four times as much)."""

    __slots__ = ("_send", "_scope", "_metrics", "_request_id", "_started")

    def __init__(self, send: Any, scope: Scope, metrics: Metrics, request_id: str) -> None:
        self._send, self._scope, self._metrics = send, scope, metrics
        self._request_id = request_id
        self._started = time.perf_counter()

    async def __call__(self, message: dict[str, Any]) -> None:
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


async def _note_route() -> None:
    """Leave the matched route where the middleware will find it (the request's scope is the
    one the middleware was called with)."""
    rule = request.url_rule
    mark(ROUTE, rule.rule if rule else "unmatched")


def mark(key: str, value: object) -> None:
    """Leave ``value`` under ``key`` in this request's ASGI scope, for the middleware."""
    scope: Scope = request.scope  # type: ignore[assignment]  # a dict; hypercorn types it closed
    scope[key] = value
