"""The bridge's own events for the partner's backend (``BRIDGE_RELAY_EVENTS=bridge``).

What happened to a session, in the bridge's words: no provider payload to parse, no ordering
rule to apply, no duplicate to guess at. Each is recorded as a relay delivery in the transaction
that made the change, so it goes out once, in the session's order, with the provider's
webhooks. Pure: the store asks, for each change it commits, what goes out.

Adding an event type is a function here of ``(before, after)`` and a line in :data:`EMITTED`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from .lifecycle import Session, Status
from .schemas import iso


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One event for the relay: its type and its body as it is sent."""

    type: str
    body: bytes


def session_updated(before: Session | None, after: Session | None) -> Outgoing | None:
    """``session.updated`` when the session's status, reason or next action changed: the
    session answer's values after the change. A session that appears as ``pending`` (a token
    minted first, a webhook that moved nothing) is no change."""
    if after is None or _seen(before) == _seen(after):
        return None
    data: dict[str, object] = {
        "session_id": after.id,
        "status": after.status.value,
        "reason": after.reason,
        "next_action": after.next_action,
        "updated_at": iso(after.updated_at),
    }
    return _event("session.updated", after.updated_at, data)


def relay_test(now: float) -> Outgoing:
    """What ``redirect-bridge relay-test`` sends: it changes nothing, and asks for nothing."""
    message = "A test message from Redirect Bridge: if this verified, your endpoint is ready."
    return _event("relay.test", now, {"message": message})


EMITTED: tuple[Callable[[Session | None, Session | None], Outgoing | None], ...] = (
    session_updated,
)


def emitted(before: Session | None, after: Session | None) -> list[Outgoing]:
    """Every event one change of a session sends, in order."""
    return [event for emit in EMITTED if (event := emit(before, after)) is not None]


def _seen(session: Session | None) -> tuple[str, str | None, str | None]:
    if session is None:
        return (Status.PENDING.value, None, None)
    return (session.status.value, session.reason, session.next_action)


def _event(kind: str, at: float, data: dict[str, object]) -> Outgoing:
    body = {"type": kind, "timestamp": iso(at), "data": data}
    return Outgoing(kind, json.dumps(body, separators=(",", ":")).encode())
