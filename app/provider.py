"""Smart Glocal webhook payloads turned into the bridge's domain terms. Pure: no I/O.

Both API shapes are read: v1 lists payments under ``acquiring_payments``, v2 under
``payment_list``. Unknown fields are ignored, never rejected.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

WEBHOOK_TYPES = frozenset(
    {
        "action_required",
        "ready_to_confirm",
        "ready_to_capture",
        "payment_finished",
        "payment_refunded",
    }
)
# Payments (v2, then v1), then payouts (v2, then v1).
_PAYMENT_LISTS = ("payment_list", "acquiring_payments", "payout_list", "payments")
# What the provider waits for from the partner (``session.next_action``), and what the two
# ``ready_to_*`` webhooks ask for by their very meaning when a payload leaves it out.
NextAction = Literal["confirm", "capture"]
_NEXT_ACTIONS: dict[Any, NextAction] = {"confirm": "confirm", "capture": "capture"}
_IMPLIED_NEXT_ACTION: dict[str, NextAction] = {
    "ready_to_confirm": "confirm",
    "ready_to_capture": "capture",
}
# Deeper than any webhook the provider sends; deeper documents are refused, not walked.
MAX_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")
_LEAP = re.compile(r"T\d\d:\d\d:60")
# In UTF-8 JSON text, a NUL can only come from an escape (the parser refuses raw control
# characters) and a surrogate from an escape or from the three bytes that would encode one
# (Python's parser lets those through).
_NUL_OR_SURROGATE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])|\xed[\xa0-\xbf]")
# Printable, no white space, no "/" (ids travel as one URL path segment), at most 256 characters,
# and not "." or ".." (which a URL's path resolves away).
# \x85 and \ufeff named apart: Python's \s and ECMAScript's (JSON Schema patterns, so
# /openapi.json) each hold one the other lacks.
_ID = r"[^\s/\x00-\x1f\x7f\x85\ufeff]"  # a character an id may hold
_ID_NOT_DOT = r"[^\s/\x00-\x1f\x7f\x85\ufeff.]"
SESSION_ID_PATTERN = (
    rf"^(?:{_ID_NOT_DOT}{_ID}{{0,255}}|\.{_ID_NOT_DOT}{_ID}{{0,254}}|\.\.{_ID}{{1,254}})$"
)
_SESSION_ID = re.compile(SESSION_ID_PATTERN)


class MalformedWebhookError(ValueError):
    """JSON that is not a webhook: no ``type`` or no ``session.id``."""


@dataclass(frozen=True, slots=True)
class Payment:
    id: str | None
    status: str | None
    amount: int | None = None
    currency: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    error_code: str | None = None
    chargeback: bool = False
    interaction: Mapping[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """What a partner may see: no card data, no customer data, no bank instruction."""
        return {
            "id": self.id,
            "status": self.status,
            "amount": self.amount,
            "currency": self.currency,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True, slots=True)
class Webhook:
    type: str
    session_id: str
    session_status: str | None
    payments: tuple[Payment, ...] = field(default=())
    updated_at: float | None = None  # ``session.updated_at``: the provider's clock, Unix seconds
    next_action: NextAction | None = None  # what the provider waits for from the partner

    @property
    def interaction(self) -> Mapping[str, Any] | None:
        """The newest customer interaction the session's payments carry, if any."""
        for payment in reversed(self.payments):
            if payment.interaction is not None:
                return payment.interaction
        return None


def parse_webhook(document: Any, raw: bytes | None = None) -> Webhook:
    """Read a decoded webhook body. Raises :class:`MalformedWebhookError` when it is not one.

    ``raw``, the JSON text ``document`` was decoded from, lets the check for NULs, lone
    surrogates and depth look at the text instead of walking the document, when the text shows
    none can be there.
    """
    if not isinstance(document, dict):
        raise MalformedWebhookError("the body must be a JSON object")
    kind = document.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedWebhookError("the webhook has no type")
    session = document.get("session")
    if not isinstance(session, dict):
        raise MalformedWebhookError("the webhook has no session object")
    session_id = session.get("id")
    if not isinstance(session_id, str) or not is_session_id(session_id):
        raise MalformedWebhookError("the webhook's session has no usable id")
    if raw is None or not _plainly_text(raw):
        _check_text(document)
    sent = session.get("next_action")
    return Webhook(
        type=kind,
        session_id=session_id,
        session_status=_text(session.get("status")),
        payments=tuple(_payment(item) for item in _payment_items(session)),
        updated_at=instant(session.get("updated_at")),
        next_action=(_NEXT_ACTIONS.get(sent) if isinstance(sent, str) else None)
        or _IMPLIED_NEXT_ACTION.get(kind),
    )


def instant(value: Any) -> float | None:
    """An ISO 8601 time as Unix seconds (UTC when it names no zone); ``None`` when it is not one."""
    if not isinstance(value, str):
        return None
    # RFC 3339 allows a lowercase "t" and "z", which Python's parser does not read, and a leap
    # second, which it cannot hold (taken as the last microsecond before it).
    text = value.replace("t", "T").replace("z", "Z")
    text, leap = (text.replace(":60", ":59", 1), True) if _LEAP.search(text) else (text, False)
    try:
        moment = datetime.fromisoformat(text)
        if leap:
            moment = moment.replace(microsecond=999_999)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        return None


def is_session_id(text: str) -> bool:
    """Whether ``text`` can be a session id here: what the provider's ids and URLs can carry."""
    return _SESSION_ID.match(text) is not None


def _plainly_text(raw: bytes) -> bool:
    """Whether JSON text ``raw`` cannot hold a NUL, a lone surrogate or nesting over
    :data:`MAX_DEPTH`: UTF-8 with nothing that could make one, fewer brackets than the limit.
    (The parser reads UTF-16 and UTF-32 too; those are walked.)"""
    return (
        json.detect_encoding(raw) == "utf-8"
        and raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH
        and _NUL_OR_SURROGATE.search(raw) is None
    )


def _check_text(document: Any) -> None:
    """Every string must be storable and showable text: JSON may escape half a surrogate pair
    (``"\\ud800"``) or a NUL (``"\\u0000"``, which PostgreSQL's text cannot hold). Walked
    without recursion, so no depth the parser accepted can overflow here."""
    pending = [(document, 0)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise MalformedWebhookError("the JSON is nested too deeply")
        if isinstance(value, str):
            if "\x00" in value or _SURROGATE.search(value):
                raise MalformedWebhookError("the JSON holds a NUL or a lone surrogate: not text")
        elif isinstance(value, dict):
            pending.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            pending.extend((item, depth + 1) for item in value)


def _payment_items(session: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    for name in _PAYMENT_LISTS:
        items = session.get(name)
        if isinstance(items, list):
            return [item for item in items if isinstance(item, dict)]
    return []


def _payment(item: Mapping[str, Any]) -> Payment:
    amount = _object(item.get("amount_details"))
    error = _object(item.get("error"))
    refunds = item.get("refunds")
    refunds = refunds if isinstance(refunds, list) else []
    minor_units = amount.get("amount")
    return Payment(
        id=_text(item.get("id")),
        status=_text(item.get("status")),
        # bool is an int subclass: JSON true is not an amount
        amount=minor_units if type(minor_units) is int else None,
        currency=_text(amount.get("currency")),
        created_at=_text(item.get("created_at")),
        finished_at=_text(item.get("finished_at")),
        error_code=_text(error.get("code")),
        chargeback=any(_object(refund).get("is_chargeback") is True for refund in refunds),
        interaction=_interaction(item.get("customer_interaction")),
    )


def _interaction(value: Any) -> Mapping[str, Any] | None:
    """An interaction as sent, whatever its type (``tds_data`` and other fields the bridge does
    not read included); without a type it is no interaction."""
    if not isinstance(value, dict):
        return None
    kind = value.get("type")
    return value if isinstance(kind, str) and kind else None


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def field_text(value: Any) -> str:
    """The text a form field or query parameter carries for a JSON value.

    Strings travel as they are; numbers and booleans as JSON writes them; ``null`` as an empty
    value; objects and lists as compact JSON.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def meaning(document: Any) -> bytes:
    """What a decoded webhook says, whatever its spelling (key order, white space, escapes):
    two deliveries with the same meaning are the same event, a copy serialised anew."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).digest()
