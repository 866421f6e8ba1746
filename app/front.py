"""The customer's most read answers, sent from below Quart's request machinery.

``GET /api/v1/status/{token}`` and ``GET /pay/{token}`` are read again and again while their
session stands still, and their answers are built once per change (:mod:`app.answers`): then
Quart's request object, contexts, hooks and routing cost more than the answer itself. The
provider's webhooks are the busiest writes, and there Quart and werkzeug were over half of a
worker's time. This ASGI layer answers a plain status request (long-polls included, which then
hold a few KB each instead of a whole request context), a page already built and a plain
webhook (no query string); everything else (another method or query, a root path) goes on to
the app, which answers it as always.

The routes' logic exists once: the status answer is :mod:`app.status_service` and a webhook
:mod:`app.webhook_service` on both paths, their refusals answered as :func:`app.errors.refusal`
says on both (storage trouble aside: the app tries once more, with the body read here); a
webhook's body is read under the app's own limits (size and time); and a page is sent again exactly
as the view's answer went out, kept here on its way when the view's note (:mod:`app.keeping`)
says it may be, under what the note says the page varies by. The tests compare both paths'
answers byte for byte. Anything else that goes wrong here is logged, counted
(``bridge_fast_path_faults_total``) and answered by the app instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Iterable

from werkzeug.exceptions import RequestTimeout
from werkzeug.sansio.utils import get_host

from . import routes, status_service, webhook_service
from .answers import Built
from .bridge import Bridge
from .errors import APIError, refusal
from .keeping import KeptPage, VariesBy, header
from .scope import HANG_UP, LONG_POLL, PAGE, ROUTE, ASGIApp, Message, Receive, Scope, Send
from .signature import HEADER
from .store import StorageUnavailableError

log = logging.getLogger(__name__)
_STATUS = routes.STATUS.pattern()
_PAY = routes.PAY.pattern()
_WAIT = re.compile(rb"(?:wait=([0-9]*))?")  # a plain query: nothing, or a number of seconds
_NOSNIFF = (b"x-content-type-options", b"nosniff")
_NO_STORE = (b"cache-control", b"no-store")
_JSON = (b"content-type", b"application/json")
_SIGNATURE = HEADER.lower().encode()


class Front:
    """ASGI middleware: ``app.asgi_app = Front(app.asgi_app, bridge, status_cors, ...)``;
    ``shared``: bytes every page holds (its script), which kept pages then share."""

    def __init__(
        self,
        inner: ASGIApp,
        the_bridge: Bridge,
        status_cors: dict[str, str],
        *,
        body_timeout: float,
        shared: bytes = b"",
    ) -> None:
        self._inner = inner
        self._bridge = the_bridge
        self._body_timeout = body_timeout
        self._shared = shared  # what every page holds alike: kept once, not in every page
        self._status_headers = tuple(
            (name.lower().encode(), value.encode()) for name, value in status_cors.items()
        )
        self._declared: tuple[VariesBy, ...] = ()  # what the pages kept so far vary by

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine itself: a held long-poll keeps no frame of this dispatch.
        if scope["type"] == "http" and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            if method == "GET":
                if found := _STATUS.fullmatch(path):
                    return self._status(scope, found[1], receive, send)
                if found := _PAY.fullmatch(path):
                    return self._page(scope, found[1], receive, send)
            elif method == "POST" and path == routes.WEBHOOKS and not scope["query_string"]:
                return self._webhook(scope, receive, send)
        return self._inner(scope, receive, send)

    async def _webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[ROUTE] = routes.WEBHOOKS
        the_bridge = self._bridge
        body, answer, refused = None, None, None
        try:
            body = await self._body(scope, receive)
            if body is None:
                return  # the client hung up before its body came: nothing to answer
            signature = header(scope, _SIGNATURE)
            answer = await webhook_service.receive(the_bridge, body, signature)
        except TimeoutError:
            refused = APIError(408, "http_error", RequestTimeout.description)
        except Exception as error:  # decided here: a kept exception would keep this frame
            refused = self._refused(error, "webhook")
        if answer is not None:
            await _send(send, 200, _webhook_headers(answer), answer, sized=True)
        elif refused is not None:
            headers = _webhook_headers(refused.body)
            await _send(send, refused.status, headers, refused.body, sized=True)
        else:  # the app tries once more, and answers or refuses itself
            await self._inner(scope, _replaying(body or b"", receive), send)

    async def _body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The request's body under the app's limits: a 413 beyond the size (by its
        ``Content-Length`` at once), ``TimeoutError`` when it takes too long; ``None`` when the
        client hangs up."""
        most = self._bridge.settings.webhook_max_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > most:
            raise webhook_service.too_large(self._bridge)
        chunks: list[bytes] = []
        size = 0
        async with asyncio.timeout(self._body_timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > most:
                    raise webhook_service.too_large(self._bridge)
                chunks.append(chunk)
                if not message.get("more_body"):
                    return b"".join(chunks)

    async def _status(self, scope: Scope, token: str, receive: Receive, send: Send) -> None:
        wait = _WAIT.fullmatch(scope["query_string"])
        base_url = self._base_url(scope)
        if wait is None or base_url is None:
            await self._inner(scope, receive, send)
            return
        scope[ROUTE] = routes.STATUS.rule
        verified = self._bridge.tokens.read(token) is not None  # junk needs no hang-up watch
        gone = _hang_up(scope, receive) if wait[1] and verified else None
        reply, refused = None, None
        try:
            reply = await status_service.answer(
                self._bridge,
                token,
                base_url,
                header(scope, b"if-none-match"),
                None if wait[1] is None else wait[1].decode(),
                gone,
            )
        except Exception as error:  # decided here: a kept exception would keep this frame
            refused = self._refused(error, "status")
        if gone is not None:
            gone.cancel()  # before the app reads the request, if it does
        if reply is not None:
            if reply.held:
                scope[LONG_POLL] = True
            headers = [*_encoded(reply.headers), *self._status_headers, _NOSNIFF]
            await _send(send, reply.status, headers, reply.body)
        elif refused is not None:
            headers = [_JSON, *_encoded(refused.headers.items())]
            headers += [*self._status_headers, _NOSNIFF, _NO_STORE]
            await _send(send, refused.status, headers, refused.body)
        else:  # the app tries once more, and answers or refuses itself
            if gone is not None:  # held already, maybe: the app answers at once
                scope["query_string"] = b""
            await self._inner(scope, receive, send)

    def _refused(self, error: Exception, route: str) -> APIError | None:
        """A refusal's answer, as the app gives it; ``None`` for storage trouble and faults,
        which the app answers (a fault logged and counted)."""
        if isinstance(error, StorageUnavailableError):
            return None
        refused = refusal(error)
        if refused is None:
            self._fault(route, error)
        return refused

    async def _page(self, scope: Scope, token: str, receive: Receive, send: Send) -> None:
        the_bridge = self._bridge
        try:
            built = await self._kept(scope, token)
            if built is not None and built.shown is not None:
                await the_bridge.page_shown(built.shown)  # storage trouble: logged, not raised
        except Exception as error:
            self._fault("page", error)
            built = None
        if built is None:
            await self._inner(scope, receive, self._keeping(scope, send))
            return
        the_bridge.metrics.kept_answer("page", "kept")
        scope[ROUTE] = routes.PAY.rule
        await _send(send, built.status, list(built.headers), built.whole, sized=True)

    async def _kept(self, scope: Scope, token: str) -> Built | None:
        """The page kept for this request, if any: under each declaration pages made. (Caught
        up first, whatever is kept: what the view then builds may be kept.)"""
        the_bridge = self._bridge
        grant = the_bridge.tokens.read(token)
        if grant is None or not await the_bridge.store.caught_up():
            return None
        now = the_bridge.clock()
        for varies_by in self._declared:
            built = the_bridge.answers.get(grant.session_id, varies_by.key(scope), now)
            if built is not None:
                return built
        return None

    def _keeping(self, scope: Scope, send: Send) -> Send:
        """``send``, keeping the page on its way when the view's note says it may be."""
        start: Message = {}
        chunks: list[bytes] = []

        async def keeping(message: Message) -> None:
            kept = scope.get(PAGE)
            if isinstance(kept, KeptPage):
                if message["type"] == "http.response.start":
                    start.update(message)
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body") and start.get("status") == 200:
                        self._keep(scope, kept, tuple(start["headers"]), b"".join(chunks))
            await send(message)

        return keeping

    def _keep(
        self, scope: Scope, kept: KeptPage, headers: tuple[tuple[bytes, bytes], ...], body: bytes
    ) -> None:
        note = kept.note
        if note.varies_by not in self._declared:
            self._declared += (note.varies_by,)
        head, found, tail = body.partition(self._shared) if self._shared else (body, b"", b"")
        shared = self._shared if found else b""  # the one object, not this page's copy of it
        built = Built(200, headers, head, note.until, shown=note.shown, shared=shared, tail=tail)
        self._bridge.answers.put(note.session_id, note.varies_by.key(scope), built, kept.since)
        self._bridge.metrics.kept_answer("page", "built")

    def _fault(self, route: str, error: Exception) -> None:
        """Something other than a refusal went wrong here: the app answers instead."""
        log.error("the fast path failed on the %s route; the app answers", route, exc_info=error)
        self._bridge.metrics.fast_path_fault(route)

    def _base_url(self, scope: Scope) -> str | None:
        """What :func:`app.links.external` makes of ``""`` for this request."""
        public_url = self._bridge.settings.public_url
        if public_url is not None:
            return public_url
        host = header(scope, b"host")
        if host is None:
            return None
        return f"{scope['scheme']}://{get_host(scope['scheme'], host, scope.get('server'))}"


def _webhook_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    """A JSON answer's headers as Quart writes them, with what the app's after-request hook
    gives every JSON answer outside the customer pages."""
    return [_JSON, (b"content-length", str(len(body)).encode()), _NOSNIFF, _NO_STORE]


def _encoded(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers]


def _hang_up(scope: Scope, receive: Receive) -> asyncio.Future[None]:
    """A future done once the client hangs up: completed by the server when it offers the
    :data:`app.scope.HANG_UP` extension, else by a task reading for ``http.disconnect``."""
    offer = scope.get("extensions", {}).get(HANG_UP)
    if isinstance(offer, dict):
        gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        offer["future"] = gone
        return gone
    return asyncio.ensure_future(_disconnected(receive))


def _replaying(body: bytes, receive: Receive) -> Receive:
    """``receive``, giving first the whole body already read."""
    given = False

    async def replaying() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replaying


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send(
    send: Send, code: int, headers: list[tuple[bytes, bytes]], body: bytes, *, sized: bool = False
) -> None:
    if not sized:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
