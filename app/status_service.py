"""The status answer a customer's browser reads, whoever serves it: the views of
:mod:`app.status` or, for a plain request, :mod:`app.front` below Quart.

It knows nothing of the web framework: it returns a :class:`Reply` and raises refusals
(:mod:`app.refusals`, and :class:`app.store.StorageUnavailableError`), which
:func:`app.errors.refusal` turns into answers, the same for both callers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection
from functools import partial
from typing import NamedTuple

from pydantic import ValidationError
from werkzeug.http import parse_etags

from . import lifecycle, routes
from .answers import Built
from .bridge import Bridge
from .changes import settle
from .refusals import InvalidWaitError, UnknownTokenError
from .schemas import StatusQuery, etag_of, problems, status_body
from .store import StorageUnavailableError

STREAM_SECONDS = 300
KEEP_ALIVE_SECONDS = 15
RETRY_MILLISECONDS = 2000


class Reply(NamedTuple):
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    held: bool  # a long-poll


async def answer(
    the_bridge: Bridge,
    token: str,
    base_url: str,
    if_none_match: str | None,
    wait: str | None,
    gone: asyncio.Future[None] | None = None,
) -> Reply:
    """The status for ``token``: 304 when ``if_none_match`` names it, held up to ``wait``
    seconds for a change (sooner once ``gone`` is done: the client hung up)."""
    view = await latest(the_bridge, token, base_url)
    the_bridge.status_limit.check(token)  # keyed by a token that verified: junk costs nothing
    seconds = wait_seconds(wait)
    etags = parse_etags(if_none_match)
    # Tuples, not the parsed sets: a long-poll holds them (and usually one ETag or none).
    offered, star = tuple(etags.as_set(include_weak=True)), etags.star_tag
    del etags
    if seconds:
        known = offered or (view.etag,)
        if view.etag in known:
            view = await hold(the_bridge, token, base_url, known, seconds, gone)
    headers = (
        ("Content-Type", "application/json"),
        ("ETag", f'"{view.etag}"'),
        ("Cache-Control", "no-cache"),
    )
    if star or view.etag in offered:
        return Reply(304, headers, b"", bool(seconds))
    return Reply(200, headers, view.body, bool(seconds))


async def stream(
    the_bridge: Bridge, token: str, base_url: str, last_event_id: str
) -> AsyncIterator[bytes]:
    """The status as a Server-Sent Events stream: a ``status`` event on every change, its id
    the ETag (a reconnecting ``EventSource`` sends the last one back and hears only what is
    new), a comment every 15 s so that proxies keep the stream, the end after 5 minutes (the
    browser reconnects, so a server can always be restarted). Refused before it starts."""
    view = await latest(the_bridge, token, base_url)
    the_bridge.status_limit.check(token)
    return _stream(the_bridge, token, base_url, view, last_event_id)


async def _stream(
    the_bridge: Bridge, token: str, base_url: str, view: Built, sent: str
) -> AsyncIterator[bytes]:
    deadline = time.monotonic() + STREAM_SECONDS
    yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
    while time.monotonic() < deadline:
        if the_bridge.store.changes.draining:  # shutting down: the browser reconnects
            return
        if view.etag != sent:
            sent = view.etag
            yield b"id: %s\nevent: status\ndata: %s\n\n" % (sent.encode(), view.body)
        else:
            yield b": still here\n\n"
        try:
            view = await hold(the_bridge, token, base_url, (sent,), KEEP_ALIVE_SECONDS)
        except UnknownTokenError:  # the token expired meanwhile
            return
        except StorageUnavailableError:  # keep the stream; the next round tries again
            await asyncio.sleep(RETRY_MILLISECONDS / 1000)


def wait_seconds(wait: str | None) -> int | None:
    """``wait`` as the status API takes it (0 to ``MAX_WAIT`` seconds), or ``None``."""
    if wait is None:
        return None
    try:
        return StatusQuery.model_validate({"wait": wait}).wait
    except ValidationError as error:
        raise InvalidWaitError(problems(error)) from None


async def latest(the_bridge: Bridge, token: str, base_url: str) -> Built:
    """The token's status answer, built once per change of its session; a bad token is
    refused before anything else is looked at."""
    session_id = _session_of(the_bridge, token)
    key = ("status", token, base_url)
    trusted = await the_bridge.store.caught_up()
    if trusted:
        built = the_bridge.answers.get(session_id, key, the_bridge.clock())
        if built is not None:
            the_bridge.metrics.kept_answer("status", "kept")
            return built
    since = the_bridge.answers.ticket()
    session = await the_bridge.customer_session(token)
    if session is None:
        raise UnknownTokenError
    body = status_body(session, base_url + routes.PAY.path(token))
    built = Built(200, (), body, until=lifecycle.expires_at(session), etag=etag_of(body))
    the_bridge.metrics.kept_answer("status", "built")
    if trusted:
        the_bridge.answers.put(session.id, key, built, since)
    return built


def _session_of(the_bridge: Bridge, token: str) -> str:
    """The session a token opens (a token may expire while its long-poll is held)."""
    grant = the_bridge.tokens.read(token)
    if grant is None:
        the_bridge.metrics.token_failures.inc()
        raise UnknownTokenError
    return grant.session_id


async def hold(
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
            with feed.watch(_session_of(the_bridge, token)) as changed:
                view = await latest(the_bridge, token, base_url)
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
