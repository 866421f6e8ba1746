"""The partner API: mint customer tokens, read sessions. Bearer keys from BRIDGE_API_KEYS."""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_request, document_response

from . import lifecycle
from .auth import partner_only
from .bodies import optional_body
from .current import bridge
from .errors import APIError, ErrorAnswer
from .links import external, pay_path, return_path, status_path
from .provider import is_session_id
from .returns import ReturnURLRefusedError, allowed_return_url
from .schemas import (
    ActionAnswer,
    PaymentAnswer,
    SessionAnswer,
    TokenAnswer,
    TokenRequest,
    iso,
    json_answer,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1/sessions")


@bp.post("/<session_id>/tokens")
@partner_only
@document_request(TokenRequest)
@document_response(TokenAnswer, 201)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 422)
async def create_token(session_id: str) -> Response:
    """Mint a customer token for a session; works before any webhook has arrived.

    The body is optional: ``{"return_url": ...}`` sends this token's customer there instead of
    to BRIDGE_RETURN_URL.
    """
    bridge().count_minting(request.headers.get("Authorization", ""))
    if not is_session_id(session_id):
        raise APIError(
            422, "invalid_session_id", "a session id is 1-256 printable characters, no spaces"
        )
    return_url = _return_url(await _token_request())
    minted = await bridge().mint_token(session_id, return_url)
    answer = TokenAnswer(
        token=minted.token,
        pay_url=external(pay_path(minted.token)),
        status_url=external(status_path(minted.token)),
        return_url=external(return_path(minted.token)),
        expires_at=iso(minted.expires_at),
    )
    return json_answer(answer, 201)


@bp.get("/<session_id>")
@partner_only
@document_response(SessionAnswer)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 404)
async def read_session(session_id: str) -> Response:
    """A session's status, its payments, and the customer action pending, if any."""
    session = await bridge().session(session_id)
    if session is None:
        raise APIError(404, "unknown_session", "no such session")
    expires = lifecycle.expires_at(session)
    action = None
    if expires is not None and session.interaction is not None:
        token = bridge().token_for(session.id)
        action = ActionAnswer(
            type=session.interaction["type"], url=external(pay_path(token)), expires_at=iso(expires)
        )
    answer = SessionAnswer(
        session_id=session.id,
        status=session.status,
        reason=session.reason,
        next_action=session.next_action,
        payments=[PaymentAnswer(**payment) for payment in session.payments],
        action=action,
        updated_at=iso(session.updated_at),
        expires_at=iso(expires),
    )
    return json_answer(answer)


async def _token_request() -> TokenRequest:
    return await optional_body(TokenRequest, '{"return_url": "https://..."} or nothing')


def _return_url(wanted: TokenRequest) -> str | None:
    """The return URL a token may carry, as it carries it; ``None`` when none was asked for."""
    if wanted.return_url is None:
        return None
    settings = bridge().settings
    try:
        return allowed_return_url(
            wanted.return_url, return_url=settings.return_url, origins=settings.return_origins
        )
    except ReturnURLRefusedError as error:
        raise APIError(422, "return_url_not_allowed", str(error)) from None
