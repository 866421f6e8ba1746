"""``GET /api/v1/status/{token}``: what a customer's browser may know, long-polled.

The token is the credential, so any origin may ask (CORS), and no cookie is involved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import NamedTuple

from pydantic import ValidationError
from quart import Blueprint, Response, request, stream_with_context
from quart_schema import RequestSchemaValidationError, document_querystring, document_response
from werkzeug.exceptions import HTTPException

from . import lifecycle
from .bridge import bridge
from .cors import allow_any_origin
from .errors import ErrorAnswer, found
from .links import external, pay_path
from .schemas import StatusAnswer, StatusQuery, etag_of, status_body
from .store import StorageUnavailableError
from .telemetry import LONG_POLL, mark

STREAM_SECONDS = 300
KEEP_ALIVE_SECONDS = 15
RETRY_MILLISECONDS = 2000

bp = allow_any_origin(
    Blueprint("status", __name__, url_prefix="/api/v1/status"),
    methods=["GET"],
    headers=["If-None-Match"],
    expose=["ETag"],
    max_age=600,
)


@bp.get("/<token>")
@document_querystring(StatusQuery)
@document_response(StatusAnswer)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 404)
async def status(token: str) -> Response:
    """A customer's status: ``ETag`` and ``If-None-Match`` for 304, ``?wait=N`` to long-poll."""
    view = await _status(token)  # a bad token is 404 before anything else is looked at
    bridge().status_limit.check(token)  # keyed by a token that verified: junk costs nothing
    wait = _wait()
    if wait:
        mark(LONG_POLL, True)  # timed apart: its time is the client's choice
        known = request.if_none_match.as_set(include_weak=True) or {view.etag}
        if view.etag in known:
            view = await _hold(token, view.session_id, known, wait)
    if request.if_none_match.contains_weak(view.etag):
        response = Response(status=304)
    else:
        response = Response(view.body, content_type="application/json")
    response.set_etag(view.etag)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/<token>/events")
@document_response(StatusAnswer)
@document_response(ErrorAnswer, 404)
async def events(token: str) -> Response:
    """The same answers as a Server-Sent Events stream: an ``status`` event on every change.

    Each event's id is the answer's ETag; a reconnecting ``EventSource`` sends it back as
    ``Last-Event-ID`` and hears only what is new. A comment every 15 s keeps proxies from
    closing the stream, and the stream ends after 5 minutes (the browser reconnects), so a
    server can always be restarted.
    """
    view = await _status(token)
    bridge().status_limit.check(token)
    seen = request.headers.get("Last-Event-ID", "")

    @stream_with_context
    async def stream() -> AsyncIterator[bytes]:
        current, sent = view, seen
        deadline = time.monotonic() + STREAM_SECONDS
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        while time.monotonic() < deadline:
            if bridge().store.changes.draining:  # shutting down: the browser reconnects
                return
            if current.etag != sent:
                sent = current.etag
                yield b"id: %s\nevent: status\ndata: %s\n\n" % (sent.encode(), current.body)
            else:
                yield b": still here\n\n"
            try:
                current = await _hold(token, current.session_id, {sent}, KEEP_ALIVE_SECONDS)
            except HTTPException:  # the token expired meanwhile
                return
            except StorageUnavailableError:  # keep the stream; the next round tries again
                await asyncio.sleep(RETRY_MILLISECONDS / 1000)

    response = Response(stream(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
    response.timeout = None  # a stream outlives Quart's response timeout
    return response


def _wait() -> int | None:
    if "wait" not in request.args:
        return None
    try:
        return StatusQuery.model_validate(request.args.to_dict()).wait
    except ValidationError as error:
        raise RequestSchemaValidationError(error) from None


class _StatusView(NamedTuple):
    session_id: str
    body: bytes
    etag: str
    expires_at: float | None


async def _status(token: str) -> _StatusView:
    session = found(await bridge().customer_session(token))
    body = status_body(session, external(pay_path(token)))
    return _StatusView(session.id, body, etag_of(body), lifecycle.expires_at(session))


async def _hold(token: str, session_id: str, known: set[str], wait: int) -> _StatusView:
    """The status once its ETag is none of ``known``, or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    waiters = bridge().metrics.waiters
    waiters.inc()
    try:
        while True:
            # Subscribe before reading, so a change in between still wakes us.
            feed = bridge().store.changes
            with feed.watch(session_id) as changed:
                view = await _status(token)
                remaining = deadline - time.monotonic()
                if view.etag not in known or remaining <= 0 or feed.draining:
                    return view
                if view.expires_at is not None:  # the window's end changes the status unwritten
                    remaining = min(remaining, max(view.expires_at - bridge().clock(), 0.01))
                await asyncio.wait({changed}, timeout=remaining)
    finally:
        waiters.dec()
