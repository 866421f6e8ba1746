"""The statements both engines run, and the mappers between their rows and the store's values.

Each statement is written once, with SQLite's ``?`` placeholders; :data:`POSTGRES` holds every
one of them with PostgreSQL's ``$1``, ``$2``, … (``sql.POSTGRES.INSERT_WEBHOOK``). Every public
constant here is a statement.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import lifecycle
from ..framing import BankRecord, BankSteps, Frames
from ..ids import message_id
from ..lifecycle import Session, Status
from . import (
    Attempt,
    Changed,
    Delivery,
    DeliveryRecord,
    DeliveryState,
    Event,
    Forgotten,
    Handoff,
    RelayJob,
)

log = logging.getLogger(__name__)

_SESSION_COLUMNS = (
    "session_id, status, reason, interaction, action_received_at, action_expires_at,"
    " returned_at, payments, created_at, updated_at, provider_updated_at, next_action"
)
# The same of a session row read as ``s`` (the webhook's reads join it).
_SESSION_COLUMNS_OF_S = ", ".join(f"s.{column.strip()}" for column in _SESSION_COLUMNS.split(","))
# The delivery states the statements name, as SQL literals.
_PENDING, _FAILED = (f"'{state}'" for state in (DeliveryState.PENDING, DeliveryState.FAILED))

INSERT_WEBHOOK = (
    "INSERT INTO webhooks (digest, session_id, type, received_at, body, meaning)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING RETURNING id"
)


def webhook_row(delivery: Delivery) -> tuple[Any, ...]:
    """A delivery as the values of :data:`INSERT_WEBHOOK`."""
    return (
        delivery.digest,
        delivery.session_id,
        delivery.type,
        delivery.received_at,
        delivery.body,
        delivery.meaning,
    )


SELECT_SESSION = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?"
UPSERT_SESSION = (
    f"INSERT INTO sessions ({_SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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


# -- PostgreSQL's webhook write: a read, the decision in Python, one write -----------------------

# What deciding a webhook needs, in one read: the session and its row's version (``xmin``:
# a new one each time any transaction writes the row), its latest ``forgotten`` note, whether
# a webhook of the same meaning or these very bytes were logged. Values: the meaning, the
# digest, the session id.
WEBHOOK_NEWS = (
    f"SELECT s.xmin::text, {_SESSION_COLUMNS_OF_S}, f.id, f.at, f.detail,"
    " EXISTS (SELECT 1 FROM webhooks WHERE session_id = k.id AND meaning = ?),"
    " EXISTS (SELECT 1 FROM webhooks WHERE digest = ?)"
    " FROM (SELECT CAST(? AS TEXT) AS id) k LEFT JOIN sessions s ON s.session_id = k.id"
    " LEFT JOIN LATERAL (SELECT id, at, detail FROM events WHERE session_id = k.id"
    " AND kind = 'forgotten' ORDER BY id DESC LIMIT 1) f ON true"
)
# The function of migration 11: writes what was decided unless what it was decided from
# changed; false then, and nothing written.
RECORD_WEBHOOK = "SELECT bridge_record_webhook(" + ", ".join("?" * 30) + ")"


@dataclass(frozen=True, slots=True)
class WebhookNews:
    """A row of :data:`WEBHOOK_NEWS`: what a webhook's decision is made from."""

    version: str | None  # the session row's, None when there is none
    session: Session | None
    forgotten_id: int | None
    forgotten: Forgotten | None
    same_meaning: bool
    duplicate: bool

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> WebhookNews:
        version, *session, forgotten_id, at, detail, same_meaning, duplicate = row
        return cls(
            version,
            session_from_row(tuple(session)) if version is not None else None,
            forgotten_id,
            forgotten_from_row(None if forgotten_id is None else (at, detail)),
            same_meaning,
            duplicate,
        )


def record_webhook_row(
    news: WebhookNews,
    delivery: Delivery,
    changed: Changed,
    emitted: list[tuple[Any, ...]],
    channel: str,
) -> tuple[Any, ...]:
    """The values of :data:`RECORD_WEBHOOK`: ``changed`` decided from ``news``, and the
    :data:`INSERT_DELIVERY` values of the bridge's own events it sends."""
    written = changed.after is not None and changed.after != changed.before
    after = session_row(changed.after) if written and changed.after else (None,) * 12
    return (
        news.version,
        news.forgotten_id,
        news.same_meaning,
        news.duplicate,
        *webhook_row(delivery),
        message_id(delivery.received_at) if delivery.relay_signature is not None else None,
        delivery.relay_signature,
        *after,
        [row[0] for row in emitted],
        [row[3] for row in emitted],
        [row[6] for row in emitted],
        changed.after != changed.before,
        channel,
        event_row(webhook_event(delivery, changed))[3],
    )


def session_row(session: Session) -> tuple[Any, ...]:
    """A session as the values of :data:`UPSERT_SESSION`."""
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


# -- bank origins (app.framing) -------------------------------------------------------------------

SELECT_BANK = (
    "SELECT origin, looked_at, headers, stalled, framed_returns, windowed_returns FROM banks"
    " WHERE origin = ?"
)
# Begins a look when none was begun since the given time: one instance wins it.
CLAIM_BANK_LOOK = (
    "INSERT INTO banks (origin, looked_at) VALUES (?, ?) ON CONFLICT (origin) DO UPDATE"
    " SET looked_at = excluded.looked_at"
    " WHERE banks.looked_at IS NULL OR banks.looked_at < ? RETURNING origin"
)
RECORD_BANK_LOOK = "UPDATE banks SET headers = ? WHERE origin = ?"
COUNT_BANK_STEPS = (
    "INSERT INTO banks (origin, stalled, framed_returns, windowed_returns) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (origin) DO UPDATE SET stalled = banks.stalled + excluded.stalled,"
    " framed_returns = banks.framed_returns + excluded.framed_returns,"
    " windowed_returns = banks.windowed_returns + excluded.windowed_returns"
)


def bank_from_row(row: Mapping[str, Any] | tuple[Any, ...] | None) -> BankRecord | None:
    if row is None:
        return None
    origin, looked_at, headers, stalled, framed_returns, windowed_returns = tuple(row)
    return BankRecord(
        origin,
        looked_at,
        Frames(headers) if headers else None,
        stalled,
        framed_returns,
        windowed_returns,
    )


def bank_steps_row(origin: str, steps: BankSteps) -> tuple[Any, ...]:
    return (origin, steps.stalled, steps.framed_returns, steps.windowed_returns)


# -- history, relay and retention --------------------------------------------------------------

INSERT_EVENT = "INSERT INTO events (session_id, at, kind, detail) VALUES (?, ?, ?, ?)"
SELECT_EVENTS = "SELECT session_id, at, kind, detail FROM events WHERE session_id = ? ORDER BY id"
COUNT_EVENTS = "SELECT count(*) FROM events WHERE session_id = ? AND kind = ?"
# A delivery is never due before an earlier pending one of its session (it could not go
# first): due at the given time, or at the latest of those, whichever is later. So the relay's
# claim, walking the due ones, never reads those held up behind one waiting for a retry. Values:
# message id, webhook id, session id, type, received at, signature, body, the time it is due
# (twice), retry from, the session id again (see :func:`delivery_values`).
INSERT_DELIVERY = (
    "INSERT INTO deliveries (message_id, webhook_id, session_id, type, received_at, signature,"
    " body, state, attempts, next_attempt_at, retry_from)"
    f" SELECT ?, ?, ?, ?, ?, ?, ?, {_PENDING}, 0,"
    " CASE WHEN earlier.at > ? THEN earlier.at ELSE ? END, ?"
    " FROM (SELECT max(next_attempt_at) AS at FROM deliveries"
    f" WHERE session_id = ? AND state = {_PENDING}) earlier"
)


def delivery_values(
    message: str,
    webhook_id: int | None,
    session_id: str,
    kind: str,
    at: float,
    signature: str | None,
    body: bytes | None,
) -> tuple[Any, ...]:
    """The values of :data:`INSERT_DELIVERY` for a delivery recorded ``at``: due then."""
    return (message, webhook_id, session_id, kind, at, signature, body, at, at, at, session_id)


def _claim_deliveries(lock: str) -> str:
    """Due, unclaimed (or its claim lapsed), the oldest pending one of its session, and none of
    its session's at the partner now (a later one may be, when an earlier one was put back in
    line meanwhile). Both session tests are subqueries in id order, so that a plan without
    sorts (see PostgresStore) reads a few of the session's index entries per candidate: as NOT
    EXISTS, PostgreSQL could make them an anti-join comparing every candidate with every
    pending delivery, and as an aggregate (the session's latest claim) a first plan walked
    every pending delivery for each candidate. (Statistics of the state, taken while none was
    pending, made even these walk them: PostgreSQL keeps none since migration 14.) Walked in
    the order they fell due (``deliveries_due``), so that the deliveries waiting for a later
    attempt, all of them while the partner is down, are never read."""
    return (
        "UPDATE deliveries SET claimed_until = ? WHERE id IN ("
        f" SELECT d.id FROM deliveries d WHERE d.state = {_PENDING} AND d.next_attempt_at <= ?"
        " AND (d.claimed_until IS NULL OR d.claimed_until < ?)"
        " AND d.id = (SELECT e.id FROM deliveries e WHERE e.session_id = d.session_id"
        f" AND e.state = {_PENDING} ORDER BY e.id LIMIT 1)"
        " AND (SELECT c.id FROM deliveries c WHERE c.session_id = d.session_id"
        f" AND c.state = {_PENDING} AND c.claimed_until >= ? ORDER BY c.id LIMIT 1) IS NULL"
        f" ORDER BY d.next_attempt_at, d.id LIMIT ?{lock})"
        " RETURNING id, webhook_id, session_id, type, received_at, retry_from, attempts,"
        " signature, message_id, body"
    )


CLAIM_DELIVERIES = _claim_deliveries("")
# PostgreSQL's: rows another instance is claiming are passed over, not waited for.
CLAIM_DELIVERIES_SKIP_LOCKED = _claim_deliveries(" FOR UPDATE SKIP LOCKED")
# A delivery's body is its own session's webhook, whatever happened to the rows around it.
SELECT_BODY = "SELECT body FROM webhooks WHERE id = ? AND session_id = ?"
FAIL_DELIVERY = f"UPDATE deliveries SET state = {_FAILED}, claimed_until = NULL WHERE id = ?"
FINISH_ATTEMPT = (
    "UPDATE deliveries SET state = ?, attempts = attempts + 1, last_attempt_at = ?,"
    " last_status = ?, next_attempt_at = ?, claimed_until = NULL"
    " WHERE id = ? AND claimed_until = ?"
)
# PostgreSQL's: every outcome of a batch in one call (migration 13's function runs the three
# statements here for each, in order), its answers in the same order. Values: see
# :func:`finish_attempts_values`.
FINISH_ATTEMPTS = "SELECT bridge_finish_attempts(?, ?, ?, ?, ?, ?, ?)"
# A delivery put off to a later attempt puts off its session's later ones as far (see
# :data:`INSERT_DELIVERY`). Values: the time of its next attempt, its session, its id, that
# time again.
PUT_OFF_LATER = (
    "UPDATE deliveries SET next_attempt_at = ? WHERE session_id = ?"
    f" AND state = {_PENDING} AND id > ? AND next_attempt_at < ?"
)
# Failed deliveries back in line, due at the given time, or no sooner than an earlier pending
# one of their session (see :data:`INSERT_DELIVERY`); retried from the given time. Values: the
# time (three times), then those of the WHERE clause that follows.
_PUT_BACK = (
    f"UPDATE deliveries SET state = {_PENDING}, next_attempt_at = coalesce("
    "(SELECT max(p.next_attempt_at) FROM deliveries p WHERE p.session_id = deliveries.session_id"
    f" AND p.state = {_PENDING} AND p.id < deliveries.id AND p.next_attempt_at > ?), ?),"
    " retry_from = ?"
)
# A failed delivery back in line, and with it every earlier failed one of its session: the
# relay sends a session's oldest pending delivery first, so those go first, in their order.
RETRY_DELIVERY = (
    f"{_PUT_BACK} WHERE id IN (SELECT e.id FROM deliveries d JOIN deliveries e"
    f" ON e.session_id = d.session_id AND e.id <= d.id AND e.state = {_FAILED}"
    f" WHERE d.message_id = ? AND d.state = {_FAILED})"
)
# Every failed delivery back in line, or every one of a session.
RETRY_FAILED = f"{_PUT_BACK} WHERE state = {_FAILED}"
RETRY_FAILED_OF_SESSION = f"{RETRY_FAILED} AND session_id = ?"
DELIVERY_EXISTS = "SELECT 1 FROM deliveries WHERE message_id = ?"
RELAY_BACKLOG = f"SELECT count(*), min(received_at) FROM deliveries WHERE state = {_PENDING}"
# A body stays while any delivery of it does: a failed one may be put back in line.
FORGET_WEBHOOKS = (
    "DELETE FROM webhooks WHERE id IN (SELECT w.id FROM webhooks w WHERE w.received_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.webhook_id = w.id) LIMIT ?)"
)
FORGET_DELIVERIES = (
    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries WHERE received_at < ?"
    f" AND state <> {_PENDING} LIMIT ?)"
)
# Returns the sessions it deleted: each is a change, announced like any other.
FORGET_SESSIONS = (
    "DELETE FROM sessions WHERE session_id IN (SELECT session_id FROM sessions"
    " WHERE updated_at < ? AND status IN ("
    + ", ".join(f"'{status.value}'" for status in Status if status.is_final)
    + ") LIMIT ?) RETURNING session_id, provider_updated_at"
)

# -- one page at the bank, and handoffs ---------------------------------------------------------

SELECT_STEP_HOLDER = "SELECT page FROM step_holders WHERE session_id = ?"
# The step to a page when no page holds it; the row comes back only when that page holds it.
HOLD_STEP = (
    "INSERT INTO step_holders (session_id, page, at) VALUES (?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET at = excluded.at"
    " WHERE step_holders.page = excluded.page RETURNING page"
)
TAKE_STEP = (
    "INSERT INTO step_holders (session_id, page, at) VALUES (?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET page = excluded.page, at = excluded.at"
)
_HANDOFF_COLUMNS = "digest, session_id, return_url, expires_at, claimed_at"
INSERT_HANDOFF = f"INSERT INTO handoffs ({_HANDOFF_COLUMNS}) VALUES (?, ?, ?, ?, NULL)"
SELECT_HANDOFF = f"SELECT {_HANDOFF_COLUMNS} FROM handoffs WHERE digest = ?"
# Once: only an unclaimed link that has not expired is claimed, and only by one request.
CLAIM_HANDOFF = (
    "UPDATE handoffs SET claimed_at = ? WHERE digest = ? AND claimed_at IS NULL"
    f" AND expires_at > ? RETURNING {_HANDOFF_COLUMNS}"
)
FORGET_STEP_HOLDERS = (
    "DELETE FROM step_holders WHERE session_id IN"
    " (SELECT session_id FROM step_holders WHERE at < ? LIMIT ?)"
)
FORGET_HANDOFFS = (
    "DELETE FROM handoffs WHERE digest IN"
    " (SELECT digest FROM handoffs WHERE expires_at < ? LIMIT ?)"
)


def handoff_row(handoff: Handoff) -> tuple[Any, ...]:
    """A handoff as the values of :data:`INSERT_HANDOFF`."""
    return (handoff.digest, handoff.session_id, handoff.return_url, handoff.expires_at)


def handoff_from_row(row: Mapping[str, Any] | tuple[Any, ...] | None) -> Handoff | None:
    if row is None:
        return None
    digest, session_id, return_url, expires_at, claimed_at = tuple(row)
    return Handoff(bytes(digest), session_id, return_url, expires_at, claimed_at)


def handoff_event(handoff: Handoff) -> Event:
    """The history's note that another browser took the session's bank step."""
    assert handoff.claimed_at is not None
    detail = {"event": "handoff", "mode": None}  # as the pages' own reports are written
    return Event(handoff.session_id, handoff.claimed_at, "browser", detail)


_FORGOTTEN = "forgotten"  # the history's note that retention deleted the session's data
SELECT_FORGOTTEN = (
    f"SELECT at, detail FROM events WHERE session_id = ? AND kind = '{_FORGOTTEN}'"
    " ORDER BY id DESC LIMIT 1"
)
# SQLite's one read of what a webhook's decision needs: the session, what retention kept of it
# once deleted (looked for only when there is no session), whether the session heard the same
# meaning before. Values: the session id, the meaning.
_FORGOTTEN_SQLITE = (
    "CASE WHEN s.session_id IS NULL THEN (SELECT {} FROM events WHERE session_id = k.id"
    " AND kind = '" + _FORGOTTEN + "' ORDER BY id DESC LIMIT 1) END"
)
SQLITE_WEBHOOK_NEWS = (
    f"SELECT {_SESSION_COLUMNS_OF_S}, {_FORGOTTEN_SQLITE.format('at')},"
    f" {_FORGOTTEN_SQLITE.format('detail')},"
    " EXISTS (SELECT 1 FROM webhooks WHERE session_id = k.id AND meaning = k.meaning)"
    " FROM (SELECT ? AS id, ? AS meaning) k LEFT JOIN sessions s ON s.session_id = k.id"
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
        Event(session_id, now, _FORGOTTEN, {"provider_updated_at": provider_updated_at})
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
    """A row of :func:`listing`."""
    delivery_id, session_id, kind, received_at, state, *rest = tuple(row)
    return DeliveryRecord(delivery_id, session_id, kind, received_at, DeliveryState(state), *rest)


def listing(
    state: str | None, session_id: str | None, before: int | None, limit: int
) -> tuple[str, tuple[Any, ...]]:
    """The statement that lists deliveries with only the tests asked for, and its values.

    Newest first by row id, so that a page follows the one before it by the last row's id:
    deliveries that arrive meanwhile are newer, and no page shows one twice. Each form reads an
    index newest first: the rows' ids, ``deliveries_by_state`` or ``deliveries_by_session`` (a
    ``(? IS NULL OR ...)`` test would keep the planners from it)."""
    tests = {"state = ?": state, "session_id = ?": session_id, "id < ?": before}
    given = {test: value for test, value in tests.items() if value is not None}
    where = f" WHERE {' AND '.join(given)}" if given else ""
    return (
        "SELECT message_id, session_id, type, received_at, state, attempts, last_attempt_at,"
        f" last_status, id FROM deliveries{where} ORDER BY id DESC LIMIT ?",
        (*given.values(), limit),
    )


def delivery_row(webhook_id: int, delivery: Delivery) -> tuple[Any, ...]:
    """The values of :data:`INSERT_DELIVERY` for a provider's webhook: due at once."""
    received = delivery.received_at
    return delivery_values(
        message_id(received),
        webhook_id,
        delivery.session_id,
        delivery.type,
        received,
        delivery.relay_signature,
        None,
    )


def after_attempts(
    attempts: Sequence[Attempt], recorded: Sequence[bool]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What the attempts on record write after their :data:`FINISH_ATTEMPT`: the values of
    :data:`PUT_OFF_LATER` of those that put their delivery off, and of :data:`INSERT_EVENT`."""
    written = [attempt for attempt, on_record in zip(attempts, recorded, strict=True) if on_record]
    put_off = [
        (attempt.next_attempt_at, attempt.job.session_id, attempt.job.id, attempt.next_attempt_at)
        for attempt in written
        if attempt.state == DeliveryState.PENDING
    ]
    return put_off, [event_row(attempt_event(attempt)) for attempt in written]


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


def finish_attempts_values(attempts: Sequence[Attempt]) -> tuple[list[Any], ...]:
    """The values of :data:`FINISH_ATTEMPTS`: one array of each of :data:`FINISH_ATTEMPT`'s
    values, then the history events' details."""
    columns = zip(*(attempt_row(attempt) for attempt in attempts), strict=True)
    states, ats, statuses, next_ats, ids, claims = (list(column) for column in columns)
    details = [event_row(attempt_event(attempt))[3] for attempt in attempts]
    return ids, claims, states, ats, statuses, next_ats, details


def numbered(statement: str) -> str:
    """A statement's ``?`` placeholders as PostgreSQL's ``$1``, ``$2``, … (none of these
    statements has a ``?`` anywhere else)."""
    head, *rest = statement.split("?")
    return head + "".join(f"${number}{text}" for number, text in enumerate(rest, start=1))


class Numbered:
    """Statements with PostgreSQL's placeholders, numbered once: an attribute of each public
    constant of ``statements``, the same name."""

    def __init__(self, statements: Mapping[str, object]) -> None:
        self._statements = {
            name: numbered(value)
            for name, value in statements.items()
            if isinstance(value, str) and name.isupper() and not name.startswith("_")
        }

    def __getattr__(self, name: str) -> str:
        try:
            return self._statements[name]
        except KeyError:
            raise AttributeError(f"no statement {name}") from None


# Every statement above as PostgreSQL runs it.
POSTGRES = Numbered(globals())
