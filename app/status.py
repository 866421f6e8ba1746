"""``GET /api/v1/status/{token}``: what a customer's browser may know, long-polled.

The token is the credential, so any origin may ask (CORS), and no cookie is involved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from functools import partial
from typing import NamedTuple

from pydantic import ValidationError
from quart import Blueprint, Response, abort, request, stream_with_context
from quart_schema import RequestSchemaValidationError, document_querystring, document_response
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_etags

from . import lifecycle
from .answers import Built
from .bridge import Bridge
from .changes import settle
from .cors import allow_any_origin, always_headers
from .current import bridge
from .errors import ErrorAnswer, found
from .links import external, pay_path
from .schemas import StatusAnswer, StatusQuery, etag_of, status_body
from .store import StorageUnavailableError
from .telemetry import LONG_POLL, mark

STREAM_SECONDS = 300
KEEP_ALIVE_SECONDS = 15
RETRY_MILLISECONDS = 2000

EXPOSED = ("ETag",)
CORS = always_headers(EXPOSED)  # app.front sends them too
bp = allow_any_origin(
    Blueprint("status", __name__, url_prefix="/api/v1/status"),
    methods=["GET"],
    headers=["If-None-Match"],
    expose=EXPOSED,
    max_age=600,
)


@bp.get("/<token>")
@document_querystring(StatusQuery)
@document_response(StatusAnswer)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 404)
async def status(token: str) -> Response:
    """A customer's status: ``ETag`` and ``If-None-Match`` for 304, ``?wait=N`` to long-poll."""
    args = request.args
    reply = await answer(
        bridge(),
        token,
        external(""),
        request.headers.get("If-None-Match"),
        args["wait"] if "wait" in args else None,
    )
    if reply.held:
        mark(LONG_POLL, True)  # timed apart: its time is the client's choice
    response = Response(reply.body, reply.status)
    for name, value in reply.headers:
        response.headers[name] = value
    return response


async def answer(
    the_bridge: Bridge,
    token: str,
    base_url: str,
    if_none_match: str | None,
    wait: str | None,
    gone: asyncio.Future[None] | None = None,
) -> Reply:
    """The status route, whoever serves it: this view, or :mod:`app.front` for a plain
    request. A long-poll ends early once ``gone`` is done (the client hung up; Quart cancels
    its own views instead)."""
    view = await _status(the_bridge, token, base_url)
    the_bridge.status_limit.check(token)  # keyed by a token that verified: junk costs nothing
    seconds = _seconds(wait)
    etags = parse_etags(if_none_match)
    # Tuples, not the parsed sets: a long-poll holds them (and usually one ETag or none).
    offered, star = tuple(etags.as_set(include_weak=True)), etags.star_tag
    del etags
    if seconds:
        known = offered or (view.etag,)
        if view.etag in known:
            view = await _hold(the_bridge, token, base_url, known, seconds, gone)
    headers = (
        ("Content-Type", "application/json"),
        ("ETag", f'"{view.etag}"'),
        ("Cache-Control", "no-cache"),
    )
    if star or view.etag in offered:
        return Reply(304, headers, b"", bool(seconds))
    return Reply(200, headers, view.body, bool(seconds))


class Reply(NamedTuple):
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    held: bool  # a long-poll


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
    the_bridge, base_url = bridge(), external("")
    view = await _status(the_bridge, token, base_url)
    the_bridge.status_limit.check(token)
    seen = request.headers.get("Last-Event-ID", "")

    @stream_with_context
    async def stream() -> AsyncIterator[bytes]:
        current, sent = view, seen
        deadline = time.monotonic() + STREAM_SECONDS
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        while time.monotonic() < deadline:
            if the_bridge.store.changes.draining:  # shutting down: the browser reconnects
                return
            if current.etag != sent:
                sent = current.etag
                yield b"id: %s\nevent: status\ndata: %s\n\n" % (sent.encode(), current.body)
            else:
                yield b": still here\n\n"
            try:
                current = await _hold(the_bridge, token, base_url, (sent,), KEEP_ALIVE_SECONDS)
            except HTTPException:  # the token expired meanwhile
                return
            except StorageUnavailableError:  # keep the stream; the next round tries again
                await asyncio.sleep(RETRY_MILLISECONDS / 1000)

    response = Response(stream(), content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
    response.timeout = None  # a stream outlives Quart's response timeout
    return response


def _seconds(wait: str | None) -> int | None:
    if wait is None:
        return None
    try:
        return StatusQuery.model_validate({"wait": wait}).wait
    except ValidationError as error:
        raise RequestSchemaValidationError(error) from None


async def _status(the_bridge: Bridge, token: str, base_url: str) -> Built:
    """The token's status answer, built once per change of its session; a bad token is 404
    before anything else is looked at."""
    grant = the_bridge.tokens.read(token)
    if grant is None:
        the_bridge.metrics.token_failures.inc()
        abort(404)
    key = ("status", token, base_url)
    trusted = await the_bridge.store.caught_up()
    if trusted:
        built = the_bridge.answers.get(grant.session_id, key, the_bridge.clock())
        if built is not None:
            the_bridge.metrics.kept_answer("status", "kept")
            return built
    since = the_bridge.answers.ticket()
    session = found(await the_bridge.customer_session(token))
    body = status_body(session, base_url + pay_path(token))
    built = Built(200, (), body, until=lifecycle.expires_at(session), etag=etag_of(body))
    the_bridge.metrics.kept_answer("status", "built")
    if trusted:
        the_bridge.answers.put(session.id, key, built, since)
    return built


async def _hold(
    the_bridge: Bridge,
    token: str,
    base_url: str,
    known: Collection[str],
    wait: int,
    gone: asyncio.Future[None] | None = None,
) -> Built:
    """The status once its ETag is none of ``known``, or after ``wait`` seconds (or once
    ``gone`` is done)."""
    deadline = time.monotonic() + wait
    waiters = the_bridge.metrics.waiters
    waiters.inc()
    try:
        while True:
            # Subscribe before reading, so a change in between still wakes us.
            feed = the_bridge.store.changes
            grant = found(the_bridge.tokens.read(token))
            with feed.watch(grant.session_id) as changed:
                view = await _status(the_bridge, token, base_url)
                remaining = deadline - time.monotonic()
                hung_up = gone is not None and gone.done()
                if view.etag not in known or remaining <= 0 or feed.draining or hung_up:
                    return view
                if view.until is not None:  # the window's end changes the status unwritten
                    remaining = min(remaining, max(view.until - the_bridge.clock(), 0.01))
                # Woken on the future itself (asyncio.wait would add a future, a set, a timer
                # and callbacks to every held long-poll).
                feed.wake_by(changed, remaining)
                if gone is None:
                    await changed
                    continue
                wake = partial(settle, changed)
                gone.add_done_callback(wake)
                try:
                    await changed
                finally:
                    gone.remove_done_callback(wake)
    finally:
        waiters.dec()
