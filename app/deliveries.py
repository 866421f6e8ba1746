"""The relay's deliveries for the partner: list them by state, put a failed one back in line."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from quart import Blueprint, Response
from quart_schema import document_response, validate_querystring

from .api import partner_only
from .bridge import bridge
from .errors import APIError, ErrorAnswer
from .schemas import iso, json_answer

bp = Blueprint("deliveries", __name__, url_prefix="/api/v1/relay/deliveries")
LISTED = 500  # the newest this many of a state


class DeliveriesQuery(BaseModel):
    state: Literal["pending", "failed", "delivered"] = "pending"


class DeliveryAnswer(BaseModel):
    id: str = Field(description="The message id: X-Bridge-Delivery-Id and webhook-id")
    session_id: str
    type: str
    received_at: str
    state: str
    attempts: int
    last_attempt_at: str | None
    last_status: int | None = Field(description="The partner's last HTTP status; null: no answer")


class DeliveriesAnswer(BaseModel):
    deliveries: list[DeliveryAnswer] = Field(description=f"Newest first, at most {LISTED}")


@bp.get("")
@partner_only
@validate_querystring(DeliveriesQuery)
@document_response(DeliveriesAnswer)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 401)
async def deliveries(query_args: DeliveriesQuery) -> Response:
    """Deliveries to the partner's backend in one state, newest first."""
    records = await bridge().store.deliveries(query_args.state, LISTED)
    return json_answer(
        DeliveriesAnswer(
            deliveries=[
                DeliveryAnswer(
                    id=record.id,
                    session_id=record.session_id,
                    type=record.type,
                    received_at=iso(record.received_at),
                    state=record.state,
                    attempts=record.attempts,
                    last_attempt_at=iso(record.last_attempt_at),
                    last_status=record.last_status,
                )
                for record in records
            ]
        )
    )


@bp.post("/<delivery_id>/retry")
@partner_only
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 404)
@document_response(ErrorAnswer, 409)
async def retry(delivery_id: str) -> Response:
    """Put a failed delivery back in line (202); it is tried again as a new one would be."""
    retried = await bridge().store.retry_delivery(delivery_id, bridge().clock())
    if retried is None:
        raise APIError(404, "unknown_delivery", "no such delivery")
    if not retried:
        raise APIError(409, "delivery_not_failed", "only a failed delivery can be retried")
    relay = bridge().relay
    if relay is not None:
        relay.wake()
    return json_answer({"status": "queued"}, 202)
