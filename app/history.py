"""``GET /api/v1/sessions/{id}/events``: a session's history, for support. Never a body, PaReq,
MD, bank URL or card data: the store keeps none of those in it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response
from quart_schema import document_response

from .auth import partner_only
from .current import bridge
from .errors import APIError, ErrorAnswer
from .schemas import iso, json_answer
from .store import Event

bp = Blueprint("history", __name__, url_prefix="/api/v1/sessions")


class EventAnswer(BaseModel):
    """``at`` and ``kind``, then the kind's own fields: ``webhook`` (type,
    provider_updated_at, outcome, changed, status), ``page`` (step), ``return``, ``timeout``,
    ``relay`` (delivery_id, type, attempt, http_status, state), ``browser`` (event:
    ``handoff``, another browser took the bank step), ``forgotten`` (retention
    deleted the session's webhook bodies and state; its tokens open nothing since)."""

    model_config = ConfigDict(extra="allow")
    at: str
    kind: str


class EventsAnswer(BaseModel):
    events: list[EventAnswer] = Field(description="Oldest first")


@bp.get("/<session_id>/events")
@partner_only
@document_response(EventsAnswer)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 404)
async def events(session_id: str) -> Response:
    """What happened to a session, oldest first: webhooks (duplicates too), customer pages,
    the return from the bank, the timeout, every relay attempt."""
    history = await bridge().events(session_id)
    if history is None:
        raise APIError(404, "unknown_session", "no such session")
    return json_answer(EventsAnswer(events=[EventAnswer(**_fields(event)) for event in history]))


def _fields(event: Event) -> dict[str, Any]:
    detail = dict(event.detail)
    if "provider_updated_at" in detail:
        detail["provider_updated_at"] = iso(detail["provider_updated_at"])
    return {"at": iso(event.at), "kind": event.kind, **detail}
