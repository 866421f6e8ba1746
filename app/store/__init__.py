"""Storage behind one small interface; one implementation per engine.

The store knows rows and transactions, never rules: every change to a session is a pure
function from :mod:`app.lifecycle`, run inside the store's transaction.
"""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import lifecycle
from ..changes import ChangeFeed
from ..config import DB_POOL_MAX, DB_POOL_MIN, DB_TIMEOUT
from ..ids import message_id
from ..lifecycle import Session, Status
from ..provider import MalformedWebhookError, parse_webhook

if TYPE_CHECKING:
    from ..events import Outgoing

Update = Callable[[Session | None], Session | None]
# What one change of a session sends to the partner, of the bridge's own events.
Emit = Callable[[Session | None, Session | None], "list[Outgoing]"]
log = logging.getLogger(__name__)


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
    provider_updated_at: float | None = None
    relay_signature: str | None = None  # the provider's X-PARTNER-SIGN, when it is relayed
    # What the body says, whatever its spelling (provider.meaning): a copy serialised anew is
    # accepted and logged, but it is no news.
    meaning: bytes | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a session's history: ``at`` on the bridge's clock, ``kind`` (``webhook``,
    ``page``, ``return``, ``timeout``, ``relay``) and its own fields. Never a body, PaReq, MD,
    bank URL or card data."""

    session_id: str
    at: float
    kind: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RelayJob:
    """A delivery claimed for one attempt; ``claim`` proves the claim when its outcome is told."""

    id: int  # the row's, for the claim
    message_id: str  # the partner's: X-Bridge-Delivery-Id and webhook-id
    session_id: str
    type: str
    received_at: float
    retry_from: float
    attempts: int
    body: bytes
    signature: str | None  # the provider's X-PARTNER-SIGN; None for the bridge's own events
    claim: float


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery as the deliveries API lists it."""

    id: str  # its message id
    session_id: str
    type: str
    received_at: float
    state: str
    attempts: int
    last_attempt_at: float | None
    last_status: int | None
    row_id: int  # its row's: the order of receipt, where the next page starts


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one relay attempt went, and what comes next: ``state`` ``delivered``, ``pending``
    (again at ``next_attempt_at``) or ``failed``."""

    job: RelayJob
    at: float
    http_status: int | None
    state: str
    next_attempt_at: float


@dataclass(frozen=True, slots=True)
class Changed:
    """A session before and after one write; ``duplicate`` when a delivery was seen already,
    ``ignored`` when it replays what a session retention deleted had heard (nothing written)."""

    before: Session | None
    after: Session | None
    duplicate: bool = False
    ignored: bool = False


@dataclass(frozen=True, slots=True)
class Forgotten:
    """Retention deleted a session ``at`` (the bridge's clock); it had heard the provider up to
    ``provider_updated_at``."""

    at: float
    provider_updated_at: float | None

    def replayed(self, delivery: Delivery) -> bool:
        """Whether ``delivery`` is no news for the session deleted: a body without the provider's
        time, or not newer than the newest the session had (a refund weeks later is news)."""
        return (
            delivery.provider_updated_at is None
            or self.provider_updated_at is None
            or delivery.provider_updated_at <= self.provider_updated_at
        )


class Store(abc.ABC):
    """A durable home for the webhook log and each session's current state."""

    def __init__(self) -> None:
        self.changes = ChangeFeed()
        # Set when the relay sends the bridge's own events: each change's, recorded in its
        # transaction.
        self.emit: Emit | None = None

    def emitted(self, changed: Changed, at: float) -> list[tuple[Any, ...]]:
        """The :data:`INSERT_DELIVERY` values of the events a change recorded ``at`` sends (the
        bridge's clock: a timeout the sweep records late is due from then)."""
        before, after = changed.before, changed.after
        if self.emit is None or after is None or after == before:
            return []
        return [
            (message_id(at), None, after.id, event.type, at, None, event.body, at, at)
            for event in self.emit(before, after)
        ]

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
    async def caught_up(self) -> bool:
        """Publish on :attr:`changes` every change any process committed before this call;
        ``False`` when that cannot be known now (the store cannot hear other processes).

        What a process built from a session (:mod:`app.answers`) is dropped on the session's
        change notice; with this first, a built answer is never older than a read of the
        database would be. Cheap, and shared by concurrent callers.
        """

    @abc.abstractmethod
    async def record_webhook(self, delivery: Delivery, update: Update) -> Changed:
        """Log ``delivery`` and apply ``update`` to its session in one durable transaction,
        with its history event and, when it carries a relay signature, its relay delivery.

        A delivery whose digest is already logged changes nothing and is reported duplicate
        (its history event is still written).
        """

    @abc.abstractmethod
    async def update_session(
        self, session_id: str, update: Update, event: Event | None = None
    ) -> Changed:
        """Apply ``update`` to one session in one durable transaction; ``event`` joins the
        history in the same transaction when the update changed something."""

    @abc.abstractmethod
    async def add_event(self, event: Event) -> None: ...

    @abc.abstractmethod
    async def events(self, session_id: str) -> list[Event]:
        """The session's history, oldest first."""

    @abc.abstractmethod
    async def claim_deliveries(self, now: float, until: float, limit: int) -> list[RelayJob]:
        """Claim, until ``until``, deliveries due at ``now``: for each session only its oldest
        pending one, none another process holds."""

    @abc.abstractmethod
    async def finish_attempt(self, attempt: Attempt) -> bool:
        """Record an attempt's outcome and its history event; ``False`` (nothing written) when
        the claim was lost meanwhile."""

    @abc.abstractmethod
    async def deliveries(
        self,
        state: str | None,
        limit: int,
        *,
        session_id: str | None = None,
        before: int | None = None,
    ) -> list[DeliveryRecord]:
        """Deliveries newest first: in ``state`` and of ``session_id`` when given, and older
        than the row ``before`` (a :attr:`DeliveryRecord.row_id`) when given."""

    @abc.abstractmethod
    async def retry_delivery(self, delivery_id: str, now: float) -> bool | None:
        """Put a failed delivery back in line, with every earlier failed one of its session:
        ``True``; ``False`` when it is not failed; ``None`` when there is no such delivery."""

    @abc.abstractmethod
    async def retry_failed(self, now: float, session_id: str | None = None) -> int:
        """Put every failed delivery (of ``session_id``, when given) back in line; how many."""

    @abc.abstractmethod
    async def relay_backlog(self) -> tuple[int, float | None]:
        """Pending deliveries: how many, and when the oldest was received."""

    @abc.abstractmethod
    async def forget(self, before: float, limit: int, now: float) -> int:
        """Delete at most ``limit`` webhook bodies and finished sessions older than ``before``
        (history events stay, and each session deleted gets a ``forgotten`` one at ``now``);
        how many rows went."""

    @abc.abstractmethod
    async def forgotten(self, session_id: str) -> Forgotten | None:
        """When retention last deleted the session, if it did."""

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
    "INSERT INTO webhooks (digest, session_id, type, received_at, body, meaning)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING RETURNING id"
)
SAME_MEANING = "SELECT 1 FROM webhooks WHERE session_id = ? AND meaning = ? LIMIT 1"
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


# -- history, relay and retention: the statements both engines run ----------------------------

INSERT_EVENT = "INSERT INTO events (session_id, at, kind, detail) VALUES (?, ?, ?, ?)"
SELECT_EVENTS = "SELECT session_id, at, kind, detail FROM events WHERE session_id = ? ORDER BY id"
INSERT_DELIVERY = (
    "INSERT INTO deliveries (message_id, webhook_id, session_id, type, received_at, signature,"
    " body, state, attempts, next_attempt_at, retry_from)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
)
# Due, unclaimed (or its claim lapsed), the oldest pending one of its session, and none of its
# session's at the partner now (a later one may be, when an earlier one was put back in line
# meanwhile). Both session tests are subqueries (in id order, an aggregate), so that a plan
# without sorts (see PostgresStore) reads a few index entries per candidate; as NOT EXISTS,
# PostgreSQL could make them an anti-join comparing every candidate with every pending delivery.
CLAIM_DELIVERIES = (
    "UPDATE deliveries SET claimed_until = ? WHERE id IN ("
    " SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND d.next_attempt_at <= ?"
    " AND (d.claimed_until IS NULL OR d.claimed_until < ?)"
    " AND d.id = (SELECT e.id FROM deliveries e WHERE e.session_id = d.session_id"
    " AND e.state = 'pending' ORDER BY e.id LIMIT 1)"
    " AND coalesce((SELECT max(c.claimed_until) FROM deliveries c"
    " WHERE c.session_id = d.session_id AND c.state = 'pending'), 0) < ?"
    " ORDER BY d.id LIMIT ?{lock})"
    " RETURNING id, webhook_id, session_id, type, received_at, retry_from, attempts, signature,"
    " message_id, body"
)
# A delivery's body is its own session's webhook, whatever happened to the rows around it.
SELECT_BODY = "SELECT body FROM webhooks WHERE id = ? AND session_id = ?"
FAIL_DELIVERY = "UPDATE deliveries SET state = 'failed', claimed_until = NULL WHERE id = ?"
FINISH_ATTEMPT = (
    "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_attempt_at = ?,"
    " last_status = ?, next_attempt_at = ?, claimed_until = NULL"
    " WHERE id = ? AND claimed_until = ?"
)
# Newest first by row id, so that a page follows the one before it by the last row's id (see
# :func:`listing`): deliveries that arrive meanwhile are newer, and no page shows one twice.
LIST_DELIVERIES = (
    "SELECT message_id, session_id, type, received_at, state, attempts, last_attempt_at,"
    " last_status, id FROM deliveries{where} ORDER BY id DESC LIMIT ?"
)
# A failed delivery back in line, and with it every earlier failed one of its session: the
# relay sends a session's oldest pending delivery first, so those go first, in their order.
RETRY_DELIVERY = (
    "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, retry_from = ?"
    " WHERE id IN (SELECT e.id FROM deliveries d JOIN deliveries e"
    " ON e.session_id = d.session_id AND e.id <= d.id AND e.state = 'failed'"
    " WHERE d.message_id = ? AND d.state = 'failed')"
)
# Every failed delivery back in line; ``{session}`` is empty, or narrows it to one session.
RETRY_FAILED = (
    "UPDATE deliveries SET state = 'pending', next_attempt_at = ?, retry_from = ?"
    " WHERE state = 'failed'{session}"
)
OF_SESSION = " AND session_id = ?"
DELIVERY_EXISTS = "SELECT 1 FROM deliveries WHERE message_id = ?"
RELAY_BACKLOG = "SELECT count(*), min(received_at) FROM deliveries WHERE state = 'pending'"
# A body stays while any delivery of it does: a failed one may be put back in line.
FORGET_WEBHOOKS = (
    "DELETE FROM webhooks WHERE id IN (SELECT w.id FROM webhooks w WHERE w.received_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.webhook_id = w.id) LIMIT ?)"
)
FORGET_DELIVERIES = (
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE received_at < ?"
    " AND state <> 'pending' LIMIT ?)"
)
# Returns the sessions it deleted: each is a change, announced like any other.
FORGET_SESSIONS = (
    "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM sessions"
    " WHERE updated_at < ? AND status IN ("
    + ", ".join(f"'{status.value}'" for status in Status if status.is_final)
    + ") LIMIT ?) RETURNING session_id, provider_updated_at"
)

FORGOTTEN = "forgotten"  # the history's note that retention deleted the session's data
SELECT_FORGOTTEN = (
    f"SELECT at, detail FROM events WHERE session_id = ? AND kind = '{FORGOTTEN}'"
    " ORDER BY id DESC LIMIT 1"
)


def event_row(event: Event) -> tuple[Any, ...]:
    return (event.session_id, event.at, event.kind, json.dumps(dict(event.detail)))


def event_from_row(row: Mapping[str, Any] | tuple[Any, ...]) -> Event:
    session_id, at, kind, detail = tuple(row)
    return Event(session_id=session_id, at=at, kind=kind, detail=json.loads(detail))


def webhook_event(delivery: Delivery, changed: Changed) -> Event:
    """The history entry of a webhook delivery, duplicates too: ``changed`` when it moved the
    status, which is the status as seen when it came (an action window may have passed)."""
    at = delivery.received_at
    before = lifecycle.at(changed.before, at).status if changed.before else Status.PENDING
    after = lifecycle.at(changed.after, at).status if changed.after else None
    return Event(
        delivery.session_id,
        delivery.received_at,
        "webhook",
        {
            "type": delivery.type,
            "provider_updated_at": delivery.provider_updated_at,
            "outcome": "duplicate" if changed.duplicate else "accepted",
            "changed": after is not None and after is not before,
            "status": after.value if after else None,
        },
    )


def forgotten_event(row: Mapping[str, Any] | tuple[Any, ...], now: float) -> tuple[Any, ...]:
    """The history entry of a session retention deletes (a row of :data:`FORGET_SESSIONS`)."""
    session_id, provider_updated_at = tuple(row)
    return event_row(
        Event(session_id, now, FORGOTTEN, {"provider_updated_at": provider_updated_at})
    )


def recorded_at(changed: Changed, event: Event | None) -> float:
    """When an update was recorded: its history event's time, else the session's own."""
    if event is not None:
        return event.at
    return changed.after.updated_at if changed.after is not None else 0.0


def forgotten_from_row(row: Mapping[str, Any] | tuple[Any, ...] | None) -> Forgotten | None:
    if row is None:
        return None
    at, detail = tuple(row)
    return Forgotten(at, json.loads(detail).get("provider_updated_at"))


def attempt_event(attempt: Attempt) -> Event:
    return Event(
        attempt.job.session_id,
        attempt.at,
        "relay",
        {
            "delivery_id": attempt.job.message_id,
            "type": attempt.job.type,
            "attempt": attempt.job.attempts + 1,
            "http_status": attempt.http_status,
            "state": attempt.state,
        },
    )


def log_missing_body(row: tuple[Any, ...] | Mapping[str, Any]) -> None:
    """A claimed delivery whose webhook is gone (a row deleted by hand, a partial restore) is
    failed and kept; it holds up neither its session's later deliveries nor anyone else's."""
    delivery_id, _webhook_id, session_id = tuple(row)[:3]
    log.error(
        "relay delivery %s of session %s has no webhook body: failed", delivery_id, session_id
    )


def relay_job(row: tuple[Any, ...], body: bytes, claim: float) -> RelayJob:
    """A claimed row of :data:`CLAIM_DELIVERIES`, with its body (its own, or its webhook's)."""
    (
        delivery_id,
        _webhook_id,
        session_id,
        kind,
        received_at,
        retry_from,
        attempts,
        signature,
        message_id,
        _own_body,
    ) = row
    return RelayJob(
        id=delivery_id,
        message_id=message_id,
        session_id=session_id,
        type=kind,
        received_at=received_at,
        retry_from=retry_from,
        attempts=attempts,
        body=bytes(body),
        signature=signature,
        claim=claim,
    )


def delivery_record(row: Mapping[str, Any] | tuple[Any, ...]) -> DeliveryRecord:
    return DeliveryRecord(*tuple(row))


def listing(
    state: str | None, session_id: str | None, before: int | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """The statement of :data:`LIST_DELIVERIES` with only the tests asked for, and its values.
    Each form reads an index newest first: the rows' ids, ``deliveries_by_state`` or
    ``deliveries_by_session`` (a ``(? IS NULL OR ...)`` test would keep the planners from it)."""
    tests = {"state = ?": state, "session_id = ?": session_id, "id < ?": before}
    given = {test: value for test, value in tests.items() if value is not None}
    where = f" WHERE {' AND '.join(given)}" if given else ""
    return LIST_DELIVERIES.format(where=where), (*given.values(), limit)


def delivery_row(webhook_id: int, delivery: Delivery) -> tuple[Any, ...]:
    """The values of :data:`INSERT_DELIVERY` for a provider's webhook: due at once."""
    received = delivery.received_at
    return (
        message_id(received),
        webhook_id,
        delivery.session_id,
        delivery.type,
        received,
        delivery.relay_signature,
        None,
        received,
        received,
    )


def attempt_row(attempt: Attempt) -> tuple[Any, ...]:
    """The values of :data:`FINISH_ATTEMPT`."""
    return (
        attempt.state,
        attempt.at,
        attempt.http_status,
        attempt.next_attempt_at,
        attempt.job.id,
        attempt.job.claim,
    )
