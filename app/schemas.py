"""The JSON API's shapes: they validate requests and generate ``/openapi.json``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from .lifecycle import Status

MAX_WAIT = 30


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
    status: Status
    reason: str | None
    payments: list[PaymentAnswer]
    action: ActionAnswer | None
    updated_at: str
    expires_at: str | None


class StatusAnswer(BaseModel):
    status: Status
    reason: str | None
    action_url: str | None
    updated_at: str


class WebhookAnswer(BaseModel):
    status: Literal["accepted", "duplicate"]


class StatusQuery(BaseModel):
    wait: int | None = Field(
        default=None,
        ge=0,
        le=MAX_WAIT,
        description="Hold the answer up to this many seconds until the status changes",
    )


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
