"""Storage behind one small interface; one implementation per engine.

The store knows rows and transactions, never rules: every change to a session is a pure
function from :mod:`app.lifecycle`, run inside the store's transaction.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import lifecycle
from ..changes import ChangeFeed
from ..config import DB_POOL_MAX, DB_POOL_MIN, DB_TIMEOUT
from ..lifecycle import Session, Status
from ..provider import MalformedWebhookError, parse_webhook

Update = Callable[[Session | None], Session | None]


class StorageUnavailableError(Exception):
    """The storage cannot be reached now; the caller should answer 503 and be retried."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook delivery as it arrived, for the event log."""

    digest: bytes  # SHA-256 of the body: equal digests are duplicate deliveries
    body: bytes
    session_id: str
    type: str
    received_at: float


@dataclass(frozen=True, slots=True)
class Changed:
    """A session before and after one write; ``duplicate`` when a delivery was seen already."""

    before: Session | None
    after: Session | None
    duplicate: bool = False


class Store(abc.ABC):
    """A durable home for the webhook log and each session's current state."""

    def __init__(self) -> None:
        self.changes = ChangeFeed()

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or upgrade the schema."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def describe(self) -> str:
        """Which database this is, for the log: never a password."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise unless the storage answers."""

    @abc.abstractmethod
    async def record_webhook(self, delivery: Delivery, update: Update) -> Changed:
        """Log ``delivery`` and apply ``update`` to its session in one durable transaction.

        A delivery whose digest is already logged changes nothing and is reported duplicate.
        """

    @abc.abstractmethod
    async def update_session(self, session_id: str, update: Update) -> Changed:
        """Apply ``update`` to one session in one durable transaction."""

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> Session | None: ...

    @abc.abstractmethod
    async def sessions_due(self, now: float, limit: int = 500) -> list[str]:
        """Sessions whose action window has ended but whose status still says so."""


def open_store(
    database_url: str,
    *,
    pool_min: int = DB_POOL_MIN,
    pool_max: int = DB_POOL_MAX,
    timeout: float = DB_TIMEOUT,
) -> Store:
    """The store for a ``BRIDGE_DATABASE_URL``; the pool settings apply to PostgreSQL."""
    if database_url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(database_url.removeprefix("sqlite:///"), timeout=timeout)
    if database_url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(database_url, pool_min=pool_min, pool_max=pool_max, timeout=timeout)
    raise ValueError(f"unsupported database URL scheme: {database_url.split(':', 1)[0]}")


SESSION_COLUMNS = (
    "session_id, status, reason, interaction, action_received_at, action_expires_at,"
    " returned_at, payments, created_at, updated_at, provider_updated_at, next_action"
)
# The statements both engines run, with SQLite's ``?`` placeholders (see :func:`numbered`).
INSERT_WEBHOOK = (
    "INSERT INTO webhooks (digest, session_id, type, received_at, body) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (digest) DO NOTHING RETURNING id"
)
SELECT_SESSION = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?"
UPSERT_SESSION = (
    f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET status = excluded.status,"
    " reason = excluded.reason, interaction = excluded.interaction,"
    " action_received_at = excluded.action_received_at,"
    " action_expires_at = excluded.action_expires_at, returned_at = excluded.returned_at,"
    " payments = excluded.payments, updated_at = excluded.updated_at,"
    " provider_updated_at = excluded.provider_updated_at, next_action = excluded.next_action"
)
SESSIONS_DUE = (
    "SELECT session_id FROM sessions WHERE status = ? AND action_expires_at <= ?"
    " ORDER BY action_expires_at LIMIT ?"
)


# The migration that added the provider's clock (see :func:`provider_clock`).
UNDATED_SESSIONS = (
    "SELECT session_id, status FROM sessions"
    " WHERE status IN ('pending', 'action_required', 'in_progress')"
)
SESSION_BODIES = "SELECT body FROM webhooks WHERE session_id = ? ORDER BY id"
DATE_SESSION = (
    "UPDATE sessions SET status = ?, provider_updated_at = ?, next_action = ? WHERE session_id = ?"
)


def provider_clock(status: str, bodies: list[bytes]) -> tuple[str, float | None, str | None]:
    """For a session stored before the provider's clock was kept: its status, and the time and
    next action of the newest logged webhook that asks for it. A hold the old version called
    ``in_progress`` (from ``ready_to_capture``) becomes ``authorized``."""
    asks_for = {Status(status)} | ({Status.AUTHORIZED} if status == Status.IN_PROGRESS else set())
    newest: tuple[float, str, str | None] | None = None
    for body in bodies:
        try:
            webhook = parse_webhook(json.loads(body), body)
        except (ValueError, MalformedWebhookError):
            continue
        target = lifecycle.target_of(webhook)
        when = webhook.updated_at
        if target is None or target.status not in asks_for or when is None:
            continue
        if newest is None or when >= newest[0]:
            newest = (when, target.status.value, webhook.next_action)
    if newest is None:
        return status, None, None
    return newest[1], newest[0], newest[2]


def numbered(sql: str) -> str:
    """A statement's ``?`` placeholders as PostgreSQL's ``$1``, ``$2``, … (none of these
    statements has a ``?`` anywhere else)."""
    head, *rest = sql.split("?")
    return head + "".join(f"${number}{text}" for number, text in enumerate(rest, start=1))


def session_row(session: Session) -> tuple[Any, ...]:
    """A session as the values of :data:`SESSION_COLUMNS`."""
    return (
        session.id,
        session.status.value,
        session.reason,
        None if session.interaction is None else json.dumps(session.interaction),
        session.action_received_at,
        session.action_expires_at,
        session.returned_at,
        json.dumps(list(session.payments)),
        session.created_at,
        session.updated_at,
        session.provider_updated_at,
        session.next_action,
    )


def session_from_row(row: Mapping[str, Any] | tuple[Any, ...] | None) -> Session | None:
    if row is None:
        return None
    (
        session_id,
        status,
        reason,
        interaction,
        action_received_at,
        action_expires_at,
        returned_at,
        payments,
        created_at,
        updated_at,
        provider_updated_at,
        next_action,
    ) = tuple(row)
    return Session(
        id=session_id,
        status=Status(status),
        reason=reason,
        interaction=None if interaction is None else json.loads(interaction),
        action_received_at=action_received_at,
        action_expires_at=action_expires_at,
        returned_at=returned_at,
        payments=tuple(json.loads(payments)),
        created_at=created_at,
        updated_at=updated_at,
        provider_updated_at=provider_updated_at,
        next_action=next_action,
    )
