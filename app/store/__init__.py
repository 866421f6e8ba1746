"""Storage behind one small interface; one implementation per engine.

The store knows rows and transactions, never rules: every change to a session is a pure
function from :mod:`app.lifecycle`, run inside the store's transaction.

Here are the interface and the values it speaks in; :mod:`.sql` holds the statements and row
mappers both engines share, :mod:`.migrations` the schema's versions, and :mod:`.sqlite` and
:mod:`.postgres` the engines.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ..changes import ChangeFeed
from ..framing import BankRecord, BankSteps, Frames
from ..ids import message_id
from ..lifecycle import Session

if TYPE_CHECKING:
    from ..events import Outgoing

Update = Callable[[Session | None], Session | None]
# What one change of a session sends to the partner, of the bridge's own events.
Emit = Callable[[Session | None, Session | None], "list[Outgoing]"]


class StorageUnavailableError(Exception):
    """The storage cannot be reached now; the caller should answer 503 and be retried."""


class DeliveryState(StrEnum):
    """Where a relay delivery is: waiting for its next attempt, taken by the partner's backend,
    or given up on after its last attempt (until someone puts it back in line)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


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
    ``page``, ``return``, ``timeout``, ``cancel``, ``relay``, ``browser``) and its own fields.
    Never a body, PaReq, MD, bank URL or card data."""

    session_id: str
    at: float
    kind: str
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Handoff:
    """A single-use link that moves a session's bank step to another browser, known by the
    SHA-256 of its secret (the secret itself is never stored); its customer goes to
    ``return_url`` as the first browser's would."""

    digest: bytes
    session_id: str
    return_url: str | None
    expires_at: float
    claimed_at: float | None = None


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
    state: DeliveryState
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
    state: DeliveryState
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
        """The :data:`.sql.INSERT_DELIVERY` values of the events a change recorded ``at`` sends
        (the bridge's clock: a timeout the sweep records late is due from then)."""
        before, after = changed.before, changed.after
        if self.emit is None or after is None or after == before:
            return []
        from .sql import delivery_values  # the statements' module imports this one

        return [
            delivery_values(message_id(at), None, after.id, event.type, at, None, event.body)
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
    async def add_counted_event(self, event: Event, most: int) -> bool:
        """Add ``event`` to its session's history unless that holds ``most`` events of its kind
        already: whether it was added."""

    @abc.abstractmethod
    async def events(self, session_id: str) -> list[Event]:
        """The session's history, oldest first."""

    @abc.abstractmethod
    async def claim_deliveries(self, now: float, until: float, limit: int) -> list[RelayJob]:
        """Claim, until ``until``, deliveries due at ``now``: for each session only its oldest
        pending one, none another process holds."""

    @abc.abstractmethod
    async def finish_attempts(self, attempts: Sequence[Attempt]) -> list[bool]:
        """Record attempts' outcomes and their history events, in one write: for each, in
        order, whether it is on record, ``False`` (nothing written of it) when its claim was
        lost meanwhile."""

    @abc.abstractmethod
    async def deliveries(
        self,
        state: DeliveryState | None,
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
        (history events stay, and each session deleted gets a ``forgotten`` one at ``now``),
        and bank steps' holders and handoffs from before then; how many rows went."""

    @abc.abstractmethod
    async def forgotten(self, session_id: str) -> Forgotten | None:
        """When retention last deleted the session, if it did."""

    @abc.abstractmethod
    async def hold_step(self, session_id: str, page: str, at: float, *, take: bool) -> bool:
        """Whether the page ``page`` holds the session's bank step after this call: it gets it
        when no page holds it, or whoever holds it with ``take``."""

    @abc.abstractmethod
    async def add_handoff(self, handoff: Handoff) -> None: ...

    @abc.abstractmethod
    async def handoff(self, digest: bytes) -> Handoff | None: ...

    @abc.abstractmethod
    async def claim_handoff(self, digest: bytes, page: str, now: float) -> Handoff | None:
        """Use a handoff once: unclaimed and not expired at ``now``, it is claimed, ``page``
        takes its session's bank step and the history notes it, in one transaction; the handoff
        claimed, or ``None`` (nothing written)."""

    @abc.abstractmethod
    async def get_session(self, session_id: str) -> Session | None: ...

    @abc.abstractmethod
    async def sessions_due(self, now: float, limit: int = 500) -> list[str]:
        """Sessions whose action window has ended but whose status still says so."""

    @abc.abstractmethod
    async def bank(self, origin: str) -> BankRecord | None:
        """What is known of a bank origin's frames, if anything."""

    @abc.abstractmethod
    async def claim_bank_look(self, origin: str, now: float, since: float) -> bool:
        """Begin a look at a bank origin's headers at ``now``, unless one was begun after
        ``since`` (by any instance): whether this caller is to look."""

    @abc.abstractmethod
    async def record_bank_look(self, origin: str, headers: Frames | None) -> None:
        """What the look begun last at a bank origin's headers saw (``None``: nothing sure)."""

    @abc.abstractmethod
    async def count_bank_steps(self, origin: str, steps: BankSteps) -> None:
        """Add what one customer's bank step showed to the bank origin's record."""


def open_store(database_url: str, *, pool_min: int, pool_max: int, timeout: float) -> Store:
    """The store for a ``BRIDGE_DATABASE_URL``; the pool settings apply to PostgreSQL. Each is
    the caller's, from :class:`app.config.Settings`, where their defaults live."""
    if database_url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(database_url.removeprefix("sqlite:///"), timeout=timeout)
    if database_url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(database_url, pool_min=pool_min, pool_max=pool_max, timeout=timeout)
    raise ValueError(f"unsupported database URL scheme: {database_url.split(':', 1)[0]}")
