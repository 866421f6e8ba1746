"""The JSON API: partners mint tokens and read sessions; customers' browsers follow a status."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any, Literal, NamedTuple, TypeVar

from pydantic import BaseModel, Field
from quart import Blueprint, Response, jsonify, request
from quart_schema import document_response, security_scheme, validate_querystring

from . import lifecycle
from .bridge import bridge
from .errors import APIError, ErrorAnswer
from .lifecycle import Session
from .links import external_url, pay_url, status_url

bp = Blueprint("api", __name__, url_prefix="/api/v1")

SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
MAX_WAIT = 30
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class TokenAnswer(BaseModel):
    token: str
    pay_url: str
    status_url: str
    return_url: str = Field(description="Give Smart Glocal this as payment_options.return_url")
    expires_at: str


class ActionAnswer(BaseModel):
    type: Literal["redirect", "inform"]
    url: str = Field(description="The bridge's customer page, never the bank's URL")
    expires_at: str | None


class PaymentAnswer(BaseModel):
    id: str | None
    status: str | None
    amount: int | None
    currency: str | None
    created_at: str | None
    finished_at: str | None


class SessionAnswer(BaseModel):
    session_id: str
    status: lifecycle.Status
    reason: str | None
    payments: list[PaymentAnswer]
    action: ActionAnswer | None
    updated_at: str
    expires_at: str | None


class StatusAnswer(BaseModel):
    status: lifecycle.Status
    reason: str | None
    action_url: str | None
    updated_at: str


class StatusQuery(BaseModel):
    wait: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WAIT,
        description="Hold the answer up to this many seconds until the status changes",
    )


def partner_only(view: F) -> F:
    """Bearer keys from ``BRIDGE_API_KEYS``, compared in constant time."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        matched = False
        for candidate in bridge().settings.api_keys:  # no early exit: every key is compared
            matched |= hmac.compare_digest(candidate.encode(), key.strip().encode())
        if scheme.lower() != "bearer" or not matched:
            raise APIError(401, "unauthorized", "a valid partner API key is required")
        return await view(*args, **kwargs)

    return security_scheme([{"partnerKey": []}])(wrapper)  # type: ignore[return-value]


@bp.post("/sessions/<session_id>/tokens")
@partner_only
@document_response(TokenAnswer, 201)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 422)
async def create_token(session_id: str) -> tuple[TokenAnswer, int]:
    """Mint a customer token for a session; works before any webhook has arrived."""
    if not SESSION_ID.fullmatch(session_id):
        raise APIError(422, "invalid_session_id", "a session id is 1-128 letters, digits, _.:-")
    minted = await bridge().mint_token(session_id)
    answer = TokenAnswer(
        token=minted.token,
        pay_url=pay_url(minted.token),
        status_url=status_url(minted.token),
        return_url=external_url("pages.came_back", token=minted.token),
        expires_at=iso(minted.expires_at),
    )
    return answer, 201


@bp.get("/sessions/<session_id>")
@partner_only
@document_response(SessionAnswer)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 404)
async def read_session(session_id: str) -> SessionAnswer:
    """A session's status, its payments, and the customer action pending, if any."""
    session = await bridge().session(session_id)
    if session is None:
        raise APIError(404, "unknown_session", "no such session")
    expires = lifecycle.expires_at(session)
    action = None
    if expires is not None and session.interaction is not None:
        token = bridge().tokens.mint(session.id).token
        action = ActionAnswer(
            type=session.interaction["type"], url=pay_url(token), expires_at=iso(expires)
        )
    return SessionAnswer(
        session_id=session.id,
        status=session.status,
        reason=session.reason,
        payments=[PaymentAnswer(**payment) for payment in session.payments],
        action=action,
        updated_at=iso(session.updated_at),
        expires_at=iso(expires),
    )


@bp.get("/status/<token>")
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


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
