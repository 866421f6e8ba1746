"""The relay's deliveries for the partner: list them page by page, put failed ones back in
line (one and the earlier failed ones of its session, or all of them after an outage)."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from quart import Blueprint, Response
from quart_schema import document_request, document_response, validate_querystring

from .auth import partner_only
from .bodies import optional_body
from .current import bridge
from .errors import APIError, ErrorAnswer
from .provider import SESSION_ID_PATTERN, is_session_id
from .schemas import iso, json_answer
from .store import DeliveryState

bp = Blueprint("deliveries", __name__, url_prefix="/api/v1/relay/deliveries")
PAGE = 100  # deliveries a page holds unless the partner asks for another number
LONGEST_PAGE = 500
# A cursor is the last listed row's id as 8 bytes, big-endian, in unpadded base64url: opaque
# to the partner, and the pattern holds exactly the ids below 2**63 (PostgreSQL's BIGINT,
# SQLite's INTEGER), so every cursor it allows is a place in the list (the 11th character
# carries 4 bits, the first's top one is 0).
CURSOR_PATTERN = "^[A-Za-f][A-Za-z0-9_-]{9}[AEIMQUYcgkosw048]$"


def _session_id(text: str) -> str:
    if not is_session_id(text):
        raise ValueError("a session id is 1-256 printable characters, no spaces")
    return text


SessionId = Annotated[
    str, AfterValidator(_session_id), Field(json_schema_extra={"pattern": SESSION_ID_PATTERN})
]


class DeliveriesQuery(BaseModel):
    state: Literal["pending", "failed", "delivered"] | None = Field(
        default=None, description="Only deliveries in this state; every state when absent"
    )
    session_id: SessionId | None = Field(default=None, description="Only this session's")
    limit: int = Field(default=PAGE, ge=1, le=LONGEST_PAGE, description="Deliveries a page holds")
    cursor: str | None = Field(
        default=None,
        pattern=CURSOR_PATTERN,
        description="The previous page's next_cursor: the page after it",
    )


class DeliveryAnswer(BaseModel):
    id: str = Field(description="The message id: X-Bridge-Delivery-Id and webhook-id")
    session_id: str
    type: str
    received_at: str
    state: Literal["pending", "failed", "delivered"]
    attempts: int
    last_attempt_at: str | None
    last_status: int | None = Field(description="The partner's last HTTP status; null: no answer")


class DeliveriesAnswer(BaseModel):
    deliveries: list[DeliveryAnswer] = Field(description="Newest first, at most limit")
    next_cursor: str | None = Field(
        description="Pass it as cursor for the next page, older deliveries; null on the last"
    )


class RetryRequest(BaseModel):
    """The body of a retry of every failed delivery; none (or an empty one) is ``{}``."""

    model_config = ConfigDict(extra="forbid")

    session_id: SessionId | None = Field(
        default=None, description="Only this session's failed deliveries; every session's if absent"
    )


class RequeuedAnswer(BaseModel):
    requeued: int = Field(description="Failed deliveries put back in line")


@bp.get("")
@partner_only
@validate_querystring(DeliveriesQuery)
@document_response(DeliveriesAnswer)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 401)
async def deliveries(query_args: DeliveriesQuery) -> Response:
    """Deliveries to the partner's backend, newest first, a page at a time: every state, or
    the one named, of every session or the one named. Pages follow one another by
    next_cursor, so deliveries that arrive meanwhile never push one into the next page twice."""
    limit = query_args.limit
    records = await bridge().deliveries(
        None if query_args.state is None else DeliveryState(query_args.state),
        limit + 1,  # one more tells whether there is a next page
        session_id=query_args.session_id,
        before=None if query_args.cursor is None else _row_id(query_args.cursor),
    )
    page = records[:limit]
    return json_answer(
        DeliveriesAnswer(
            next_cursor=_cursor(page[-1].row_id) if len(records) > limit else None,
            deliveries=[
                DeliveryAnswer(
                    id=record.id,
                    session_id=record.session_id,
                    type=record.type,
                    received_at=iso(record.received_at),
                    state=record.state.value,
                    attempts=record.attempts,
                    last_attempt_at=iso(record.last_attempt_at),
                    last_status=record.last_status,
                )
                for record in page
            ],
        )
    )


@bp.post("/<delivery_id>/retry")
@partner_only
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 404)
@document_response(ErrorAnswer, 409)
async def retry(delivery_id: str) -> Response:
    """Put a failed delivery back in line (202), with every earlier failed delivery of its
    session, which go first: the session's deliveries reach the partner in the order received.
    Each is tried again as a new one would be."""
    retried = await bridge().retry_delivery(delivery_id)
    if retried is None:
        raise APIError(404, "unknown_delivery", "no such delivery")
    if not retried:
        raise APIError(409, "delivery_not_failed", "only a failed delivery can be retried")
    return json_answer({"status": "queued"}, 202)


@bp.post("/retry")
@partner_only
@document_request(RetryRequest)
@document_response(RequeuedAnswer, 202)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 422)
async def retry_all() -> Response:
    """Put every failed delivery back in line, or every one of the session named: after an
    outage of the partner's backend, one call, and each session's deliveries reach it in the
    order received."""
    wanted = await _retry_request()
    requeued = await bridge().retry_failed(wanted.session_id)
    return json_answer(RequeuedAnswer(requeued=requeued), 202)


async def _retry_request() -> RetryRequest:
    return await optional_body(RetryRequest, '{} or {"session_id": "..."}')


def _cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(row_id.to_bytes(8, "big")).decode().rstrip("=")


def _row_id(cursor: str) -> int:
    """The row a cursor names (:data:`CURSOR_PATTERN` has refused any other with a 400)."""
    return int.from_bytes(base64.urlsafe_b64decode(cursor + "="), "big")
