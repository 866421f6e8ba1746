"""The customer's most read answers, sent from below Quart's request machinery.

``GET /api/v1/status/{token}`` and ``GET /pay/{token}`` are read again and again while their
session stands still, and their answers are built once per change (:mod:`app.answers`): then
Quart's request object, contexts, hooks and routing cost more than the answer itself. This ASGI
layer answers a plain status request (long-polls included, which then hold a few KB each
instead of a whole request context) and a page already built; everything else, and every
request it is unsure of (an error, an unusual query, a root path), goes on to the app, which
answers it as always.

The routes' logic exists once: the status answer is :func:`app.status.answer` on both paths,
and a page is sent again exactly as the view's answer went out (kept here on its way, when the
view said it may be). The tests compare both paths' answers byte for byte.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

from werkzeug.sansio.utils import get_host

from . import status
from .answers import Built
from .bridge import Bridge
from .telemetry import HUNG_UP, KEEP_PAGE, LONG_POLL, ROUTE

Scope = dict[str, Any]
ASGI = Callable[[Scope, Any, Any], Awaitable[None]]

_STATUS = re.compile(r"/api/v1/status/([A-Za-z0-9_.-]+)")
_PAY = re.compile(r"/pay/([A-Za-z0-9_.-]+)")
_WAIT = re.compile(rb"(?:wait=([0-9]|[12][0-9]|30))?")  # what StatusQuery takes, spelt plainly
_NOSNIFF = ((b"x-content-type-options", b"nosniff"),)


class Front:
    """ASGI middleware: ``app.asgi_app = Front(app.asgi_app, bridge, status_cors)``."""

    def __init__(self, inner: ASGI, the_bridge: Bridge, status_cors: dict[str, str]) -> None:
        self._inner = inner
        self._bridge = the_bridge
        self._status_headers = tuple(
            (name.lower().encode(), value.encode()) for name, value in status_cors.items()
        )

    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        # Not a coroutine itself: a held long-poll keeps no frame of this dispatch.
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            path = scope["path"]
            if found := _STATUS.fullmatch(path):
                return self._status(scope, found[1], receive, send)
            if found := _PAY.fullmatch(path):
                return self._page(scope, found[1], receive, send)
        return self._inner(scope, receive, send)

    async def _status(self, scope: Scope, token: str, receive: Any, send: Any) -> None:
        wait = _WAIT.fullmatch(scope["query_string"])
        base_url = self._base_url(scope)
        if wait is None or base_url is None or self._bridge.tokens.read(token) is None:
            await self._inner(scope, receive, send)  # the app answers, refuses and counts
            return
        gone = _hang_up(scope, receive) if wait[1] else None
        try:
            reply = await status.answer(
                self._bridge,
                token,
                base_url,
                _header(scope, b"if-none-match"),
                wait[1].decode() if wait[1] else None,
                gone,
            )
        except Exception:  # a refusal, storage trouble or a fault: the app answers it
            reply = None
        if gone is not None:
            gone.cancel()  # before the app reads the request itself
        if reply is None:
            if gone is not None:  # held already, maybe: the app answers at once, not again
                scope["query_string"] = b""
            await self._inner(scope, receive, send)
            return
        if reply.held:
            scope[LONG_POLL] = True
        headers = [(name.lower().encode(), value.encode()) for name, value in reply.headers]
        headers += [*self._status_headers, *_NOSNIFF]
        scope[ROUTE] = "/api/v1/status/<token>"
        await _send(send, reply.status, headers, reply.body)

    async def _page(self, scope: Scope, token: str, receive: Any, send: Any) -> None:
        the_bridge = self._bridge
        grant = the_bridge.tokens.read(token)
        built = None
        if grant is not None and await the_bridge.store.caught_up():  # never raises
            built = the_bridge.answers.get(grant.session_id, _page_key(scope), the_bridge.clock())
        if built is None:
            await self._inner(scope, receive, self._keeping(scope, send))
            return
        the_bridge.metrics.kept_answer("page", "kept")
        if built.shown is not None:
            await the_bridge.page_shown(built.shown)  # storage trouble: logged, not raised
        scope[ROUTE] = "/pay/<token>"
        await _send(send, built.status, list(built.headers), built.body, sized=True)

    def _keeping(self, scope: Scope, send: Any) -> Any:
        """``send``, keeping the page on its way when the view said it may be sent again."""
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def keeping(message: dict[str, Any]) -> None:
            keep = scope.get(KEEP_PAGE)
            if keep is not None:
                if message["type"] == "http.response.start":
                    start.update(message)
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body") and start.get("status") == 200:
                        session_id, since, until, shown = keep
                        built = Built(
                            200, tuple(start["headers"]), b"".join(chunks), until, shown=shown
                        )
                        self._bridge.answers.put(session_id, _page_key(scope), built, since)
                        self._bridge.metrics.kept_answer("page", "built")
            await send(message)

        return keeping

    def _base_url(self, scope: Scope) -> str | None:
        """What :func:`app.links.external` makes of ``""`` for this request."""
        public_url = self._bridge.settings.public_url
        if public_url is not None:
            return public_url
        host = _header(scope, b"host")
        if host is None:
            return None
        return f"{scope['scheme']}://{get_host(scope['scheme'], host, scope.get('server'))}"


def _page_key(scope: Scope) -> tuple[object, ...]:
    """Everything a kept page may differ by: the address, the language asked for, whether it
    is framed, and the host its links are made for."""
    return (
        "page",
        scope["path"],
        scope["query_string"],
        scope["scheme"],
        _header(scope, b"host"),
        _header(scope, b"accept-language"),
        _header(scope, b"sec-fetch-dest"),
    )


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header, as Quart's ``request.headers.get`` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _hang_up(scope: Scope, receive: Any) -> asyncio.Future[Any]:
    """A future done once the client hangs up: completed by serve's protocol when it offers
    to (:data:`app.telemetry.HUNG_UP`), else by a task reading for ``http.disconnect``."""
    if HUNG_UP in scope:
        gone: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        scope[HUNG_UP] = gone
        return gone
    return asyncio.ensure_future(_disconnected(receive))


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send(
    send: Any, code: int, headers: list[tuple[bytes, bytes]], body: bytes, *, sized: bool = False
) -> None:
    if not sized:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
