"""``GET /api/v1/status/{token}``: what a customer's browser may know, long-polled.

The token is the credential, so any origin may ask (CORS), and no cookie is involved.
"""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_querystring, document_response

from . import routes, status_service
from .cors import allow_any_origin, always_headers
from .current import bridge, mark
from .errors import ErrorAnswer
from .links import external
from .schemas import StatusAnswer, StatusQuery
from .scope import LONG_POLL

EXPOSED = ("ETag",)
CORS = always_headers(EXPOSED)  # app.front sends them too
bp = allow_any_origin(
    Blueprint("status", __name__),
    methods=["GET"],
    headers=["If-None-Match"],
    expose=EXPOSED,
    max_age=600,
)


@bp.get(routes.STATUS.rule)
@document_querystring(StatusQuery)
@document_response(StatusAnswer)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 404)
async def status(token: str) -> Response:
    """A customer's status: ``ETag`` and ``If-None-Match`` for 304, ``?wait=N`` to long-poll."""
    args = request.args
    reply = await status_service.answer(
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


@bp.get(routes.STATUS_EVENTS.rule)
@document_response(StatusAnswer)
@document_response(ErrorAnswer, 404)
async def events(token: str) -> Response:
    """The same answers as a Server-Sent Events stream: a ``status`` event on every change.

    Each event's id is the answer's ETag; a reconnecting ``EventSource`` sends it back as
    ``Last-Event-ID`` and hears only what is new. A comment every 15 s keeps proxies from
    closing the stream, and the stream ends after 5 minutes (the browser reconnects), so a
    server can always be restarted.
    """
    stream = await status_service.stream(
        bridge(), token, external(""), request.headers.get("Last-Event-ID", "")
    )
    response = Response(stream, content_type="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events on at once
    response.timeout = None  # a stream outlives Quart's response timeout
    return response
