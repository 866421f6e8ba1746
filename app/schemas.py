"""The JSON API's shapes: they validate requests and generate ``/openapi.json``."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from quart import Response

from . import lifecycle
from .lifecycle import Session, Status
from .provider import NextAction
from .returns import RETURN_URL_LONGEST

MAX_WAIT = 30


class TokenRequest(BaseModel):
    """The optional body of a token request; no body (or an empty one) is ``{}``."""

    model_config = ConfigDict(extra="forbid")

    return_url: str | None = Field(
        default=None,
        # Documented, and checked with the origin (a refused return_url is one answer, 422
        # return_url_not_allowed, whatever is wrong with it).
        json_schema_extra={"maxLength": RETURN_URL_LONGEST},
        description="Where this token's customer goes once the outcome is known, instead of"
        " BRIDGE_RETURN_URL, with the same parameters (session_id, status, ts, sig). Its origin"
        " must be BRIDGE_RETURN_URL's or one of BRIDGE_RETURN_ORIGINS; any other is refused"
        " (422 return_url_not_allowed), and so is one whose query already names session_id,"
        " status, ts or sig (in any case or encoding). Characters a URL may not carry are"
        " percent-encoded;"
        f" at most {RETURN_URL_LONGEST} characters so.",
    )


class TokenAnswer(BaseModel):
    token: str
    pay_url: str
    status_url: str
    return_url: str = Field(description="Give Smart Glocal this as payment_options.return_url")
    expires_at: str


class ActionAnswer(BaseModel):
    type: str = Field(
        description="The provider's interaction type: redirect, inform, or one the bridge"
        " cannot show (its page then says the customer finishes elsewhere)"
    )
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
    status: Status
    reason: str | None
    next_action: NextAction | None = Field(
        description="What the provider waits for from the partner: call session/confirm or"
        " session/capture (or session/cancel); null once nothing is awaited"
    )
    payments: list[PaymentAnswer]
    action: ActionAnswer | None
    updated_at: str
    expires_at: str | None


class StatusAnswer(BaseModel):
    status: Status
    reason: str | None
    action_url: str | None
    updated_at: str
    done: bool = Field(
        description="The customer's part is over: a final status, or authorized (held for"
        " the partner to capture); the page shows the outcome"
    )


class WebhookAnswer(BaseModel):
    status: Literal["accepted", "duplicate", "ignored"]


class StatusQuery(BaseModel):
    wait: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WAIT,
        description="Hold the answer up to this many seconds until the status changes",
    )


@overload
def iso(timestamp: float) -> str: ...
@overload
def iso(timestamp: float | None) -> str | None: ...
def iso(timestamp: float | None) -> str | None:
    """Unix seconds as ISO 8601 in UTC, to the millisecond."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def status_body(session: Session, action_url: str) -> bytes:
    """What a customer's browser may know, as the status API sends it: never the bank URL,
    PaReq or MD."""
    pending_action = lifecycle.expires_at(session) is not None
    answer = {
        "status": session.status.value,
        "reason": session.reason,
        "action_url": action_url if pending_action else None,
        "updated_at": iso(session.updated_at),
        "done": session.status.is_outcome,
    }
    return json.dumps(answer, separators=(",", ":")).encode()


def problems(error: ValidationError, whole: str = "") -> str:
    """A validation error in one line: each problem's place (``whole`` for the value itself)
    and message, separated by ``; ``."""
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or whole}: {item['msg']}"
        for item in error.errors(include_url=False)
    )


def etag_of(body: bytes) -> str:
    """A strong ETag (unquoted) for a status answer: it changes exactly when the answer does."""
    return hashlib.sha256(body).hexdigest()[:20]


def json_answer(answer: BaseModel | dict[str, Any], status: int = 200) -> Response:
    """An answer as JSON, made here: a ``Response`` goes out as it is, not inspected by
    quart-schema on its way."""
    body = answer.model_dump_json() if isinstance(answer, BaseModel) else json.dumps(answer)
    return Response(body, status, content_type="application/json")
