"""``GET /api/v1/status/{token}``: what a customer's browser may know, long-polled.

The token is the credential, so any origin may ask (CORS), and no cookie is involved.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any, NamedTuple

from quart import Blueprint, Response, jsonify, request
from quart_cors import cors
from quart_schema import document_response, validate_querystring

from . import lifecycle
from .bridge import bridge
from .errors import APIError, ErrorAnswer
from .lifecycle import Session
from .links import pay_url
from .schemas import StatusAnswer, StatusQuery, iso

bp = cors(
    Blueprint("status", __name__, url_prefix="/api/v1/status"),
    allow_origin="*",
    allow_methods=["GET"],
    allow_headers=["If-None-Match"],
    expose_headers=["ETag"],
    max_age=600,
)


@bp.get("/<token>")
@validate_querystring(StatusQuery)
@document_response(StatusAnswer)
@document_response(ErrorAnswer, 404)
async def status(token: str, query_args: StatusQuery) -> Response:
    """A customer's status: ``ETag`` and ``If-None-Match`` for 304, ``?wait=N`` to long-poll."""
    session_id = session_for(token)
    view = await _status(session_id, token)
    if query_args.wait:
        baseline = next(iter(request.if_none_match.as_set()), view.etag)
        if view.etag == baseline:
            view = await _hold(session_id, token, baseline, query_args.wait)
    if request.if_none_match.contains(view.etag):
        response = Response(status=304)
    else:
        response = jsonify(view.answer)
    response.set_etag(view.etag)
    response.headers["Cache-Control"] = "no-cache"
    return response


def session_for(token: str) -> str:
    """The session a customer token opens, or a 404 that says nothing more."""
    session_id = bridge().session_for(token)
    if session_id is None:
        raise APIError(404, "not_found", "no such status")
    return session_id


class _StatusView(NamedTuple):
    answer: dict[str, Any]
    etag: str
    expires_at: float | None


async def _status(session_id: str, token: str) -> _StatusView:
    session = await bridge().session(session_id)
    session = session or lifecycle.new_session(session_id, bridge().clock())
    answer = status_answer(session, pay_url(token))
    etag = hashlib.sha256(json.dumps(answer, sort_keys=True).encode()).hexdigest()[:20]
    return _StatusView(answer, etag, lifecycle.expires_at(session))


def status_answer(session: Session, action_url: str) -> dict[str, Any]:
    """What a customer's browser may know: never the bank URL, PaReq or MD."""
    pending_action = lifecycle.expires_at(session) is not None
    return {
        "status": session.status.value,
        "reason": session.reason,
        "action_url": action_url if pending_action else None,
        "updated_at": iso(session.updated_at),
    }


async def _hold(session_id: str, token: str, baseline: str, wait: int) -> _StatusView:
    """The status once its ETag differs from ``baseline``, or after ``wait`` seconds."""
    deadline = time.monotonic() + wait
    changes = bridge().store.changes
    while True:
        # Subscribe before reading, so a change in between still wakes us.
        with changes.watch(session_id) as changed:
            view = await _status(session_id, token)
            remaining = deadline - time.monotonic()
            if view.etag != baseline or remaining <= 0:
                return view
            if view.expires_at is not None:  # the window's end changes the status unwritten
                remaining = min(remaining, max(view.expires_at - bridge().clock(), 0.01))
            await asyncio.wait({changed}, timeout=remaining)
