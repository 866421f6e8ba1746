"""The state machine, without an app: every (status, webhook, provider clock) triple, the action
window, ordering, and every documented delivery order converging."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import lifecycle
from app.lifecycle import ACTION_TIMEOUT, CHARGEBACK, CUSTOMER, Session, Status
from app.provider import Webhook, parse_webhook

from .payloads import inform, redirect, webhook

NOW = 1_800_000_000.0  # when the webhook under test is received
# The provider's clock: the current status came from a webhook of THEN; the incoming is LATER.
THEN = 1_700_000_000.0
LATER = THEN + 60
TIMEOUT = 3600.0
SESSION_ID = "ps_1"
DECLINED = "insufficient_funds"
PROVIDER_FAULT = "internal_error"

OLD_REDIRECT = redirect(url="https://acs.bank.test/old?foo=bar", params={"PaReq": "old"})
NEW_REDIRECT = redirect(url="https://acs.bank.test/new?foo=bar", params={"PaReq": "new"})


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds")


def parsed(kind: str, *, at: float | None = LATER, **fields: Any) -> Webhook:
    """A webhook of ``kind`` from the provider's clock ``at`` (``None``: a payload without one)."""
    body = webhook(kind, SESSION_ID, **fields)
    if at is None:
        del body["session"]["updated_at"]
    else:
        body["session"]["updated_at"] = iso(at)
    return parse_webhook(body)


def without_interaction(body: dict[str, Any]) -> dict[str, Any]:
    for item in body["session"]["acquiring_payments"]:
        item.pop("customer_interaction", None)
    return body


def refunds(*, chargeback: bool) -> list[dict[str, Any]]:
    return [
        {
            "id": "rf_1",
            "amount_details": {"amount": 15000, "currency": "usd"},
            "is_chargeback": chargeback,
        }
    ]


# -- the incoming webhooks ------------------------------------------------------------------------

WEBHOOKS: dict[str, Webhook] = {
    "action_required/redirect": parsed("action_required", interaction=NEW_REDIRECT),
    "action_required/inform": parsed("action_required", interaction=inform()),
    "action_required/none": parse_webhook(without_interaction(webhook("action_required"))),
    "ready_to_confirm": parsed("ready_to_confirm"),
    "ready_to_capture": parsed("ready_to_capture"),
    "finished/accepted+succeeded": parsed(
        "payment_finished", session_status="accepted", payment_status="succeeded"
    ),
    "finished/cancelled": parsed(
        "payment_finished", session_status="cancelled", payment_status="failed"
    ),
    "finished/canceled": parsed(
        "payment_finished", session_status="canceled", payment_status="failed"
    ),
    "finished/failed": parsed(
        "payment_finished",
        session_status="in_progress",
        payment_status="failed",
        error_code=DECLINED,
    ),
    "finished/error": parsed(
        "payment_finished",
        session_status="error",
        payment_status="failed",
        error_code=PROVIDER_FAULT,
    ),
    "finished/nothing": parsed(
        "payment_finished", session_status="in_progress", payment_status="pending"
    ),
    "refunded": parsed("payment_refunded", refunds=refunds(chargeback=False)),
    "refunded/chargeback": parsed("payment_refunded", refunds=refunds(chargeback=True)),
    # Looks final in every field but its type, which the bridge does not know.
    "unknown": parsed("payment_captured", session_status="accepted", payment_status="succeeded"),
}


# -- the current sessions -------------------------------------------------------------------------


def stored(status: Status, **fields: Any) -> Session:
    base: dict[str, Any] = {
        "id": SESSION_ID,
        "status": status,
        "created_at": NOW - 7200,
        "updated_at": NOW - 900,
        "provider_updated_at": THEN,
    }
    return Session(**(base | fields))


CURRENT: dict[str, Session] = {
    "pending": lifecycle.new_session(SESSION_ID, NOW - 7200),
    "action_required": stored(
        Status.ACTION_REQUIRED,
        interaction=OLD_REDIRECT,
        action_received_at=NOW - 600,
        action_expires_at=NOW - 600 + TIMEOUT,
    ),
    "in_progress": stored(Status.IN_PROGRESS, next_action="confirm"),
    "authorized": stored(Status.AUTHORIZED, next_action="capture"),
    "succeeded": stored(Status.SUCCEEDED),
    "failed": stored(Status.FAILED, reason="do_not_honor"),
    "canceled": stored(Status.CANCELED),
    # The bridge's inference, as a background sweep records it ...
    "canceled/action_timeout": stored(
        Status.CANCELED,
        reason=ACTION_TIMEOUT,
        action_received_at=NOW - 5000,
        action_expires_at=NOW - 5000 + TIMEOUT,
        updated_at=NOW - 5000 + TIMEOUT,
    ),
    # ... and as a read works it out: still stored as action_required, but the window has passed.
    "canceled/action_timeout (inferred)": stored(
        Status.ACTION_REQUIRED,
        interaction=OLD_REDIRECT,
        action_received_at=NOW - 5000,
        action_expires_at=NOW - 5000 + TIMEOUT,
    ),
    # The customer gave up on a bridge page during the bank step.
    "canceled/customer": stored(
        Status.CANCELED, reason=CUSTOMER, action_received_at=NOW - 600, updated_at=NOW - 300
    ),
    "error": stored(Status.ERROR, reason=PROVIDER_FAULT),
    "refunded": stored(Status.REFUNDED),
}

# -- the expected table, written out by hand from the README's "How it flows" and lifecycle's
# docstring, for a webhook newer by the provider's clock than the one the current status came from.
# IGNORED: the webhook changes nothing and apply() hands back the very same object.

IGNORED = None
AR = (Status.ACTION_REQUIRED, None)
IN_PROGRESS = (Status.IN_PROGRESS, None)
AUTHORIZED = (Status.AUTHORIZED, None)
SUCCEEDED = (Status.SUCCEEDED, None)
CANCELED = (Status.CANCELED, None)
FAILED = (Status.FAILED, DECLINED)
ERROR = (Status.ERROR, PROVIDER_FAULT)
REFUNDED = (Status.REFUNDED, None)
CHARGED_BACK = (Status.REFUNDED, CHARGEBACK)

Expected = tuple[Status, str | None] | None

EXPECTED: dict[str, dict[str, Expected]] = {
    "pending": {
        "action_required/redirect": AR,
        "action_required/inform": AR,
        "action_required/none": IGNORED,
        "ready_to_confirm": IN_PROGRESS,
        "ready_to_capture": AUTHORIZED,
        "finished/accepted+succeeded": SUCCEEDED,
        "finished/cancelled": CANCELED,
        "finished/canceled": CANCELED,
        "finished/failed": FAILED,
        "finished/error": ERROR,
        "finished/nothing": IGNORED,
        "refunded": REFUNDED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
    "action_required": {
        "action_required/redirect": AR,  # a different interaction: it replaces the old one
        "action_required/inform": AR,
        "action_required/none": IGNORED,
        "ready_to_confirm": IN_PROGRESS,  # the widget's flow: the bank step is done
        "ready_to_capture": AUTHORIZED,
        "finished/accepted+succeeded": SUCCEEDED,
        "finished/cancelled": CANCELED,
        "finished/canceled": CANCELED,
        "finished/failed": FAILED,
        "finished/error": ERROR,
        "finished/nothing": IGNORED,
        "refunded": REFUNDED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
    "in_progress": {
        "action_required/redirect": AR,  # confirmed first: now to the bank
        "action_required/inform": AR,
        "action_required/none": IGNORED,
        "ready_to_confirm": IN_PROGRESS,  # newer news: its payments and next action
        "ready_to_capture": AUTHORIZED,
        "finished/accepted+succeeded": SUCCEEDED,
        "finished/cancelled": CANCELED,
        "finished/canceled": CANCELED,
        "finished/failed": FAILED,
        "finished/error": ERROR,
        "finished/nothing": IGNORED,
        "refunded": REFUNDED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
    "authorized": {
        "action_required/redirect": AR,  # the newest provider event wins before a final one
        "action_required/inform": AR,
        "action_required/none": IGNORED,
        "ready_to_confirm": IN_PROGRESS,
        "ready_to_capture": AUTHORIZED,
        "finished/accepted+succeeded": SUCCEEDED,  # captured
        "finished/cancelled": CANCELED,  # the hold was released
        "finished/canceled": CANCELED,
        "finished/failed": FAILED,
        "finished/error": ERROR,
        "finished/nothing": IGNORED,
        "refunded": REFUNDED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
    "succeeded": {
        "action_required/redirect": IGNORED,
        "action_required/inform": IGNORED,
        "action_required/none": IGNORED,
        "ready_to_confirm": IGNORED,
        "ready_to_capture": IGNORED,
        "finished/accepted+succeeded": IGNORED,
        "finished/cancelled": IGNORED,
        "finished/canceled": IGNORED,
        "finished/failed": IGNORED,
        "finished/error": IGNORED,
        "finished/nothing": IGNORED,
        "refunded": REFUNDED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
    "failed": {
        "action_required/redirect": IGNORED,
        "action_required/inform": IGNORED,
        "action_required/none": IGNORED,
        "ready_to_confirm": IGNORED,
        "ready_to_capture": IGNORED,
        "finished/accepted+succeeded": IGNORED,
        "finished/cancelled": IGNORED,
        "finished/canceled": IGNORED,
        "finished/failed": IGNORED,
        "finished/error": IGNORED,
        "finished/nothing": IGNORED,
        "refunded": IGNORED,  # a refund cannot follow a failed payment
        "refunded/chargeback": IGNORED,
        "unknown": IGNORED,
    },
    "canceled": {
        "action_required/redirect": IGNORED,
        "action_required/inform": IGNORED,
        "action_required/none": IGNORED,
        "ready_to_confirm": IGNORED,
        "ready_to_capture": IGNORED,
        "finished/accepted+succeeded": IGNORED,
        "finished/cancelled": IGNORED,
        "finished/canceled": IGNORED,
        "finished/failed": IGNORED,
        "finished/error": IGNORED,
        "finished/nothing": IGNORED,
        "refunded": IGNORED,  # the provider's canceled is final, unlike the bridge's inference
        "refunded/chargeback": IGNORED,
        "unknown": IGNORED,
    },
    "canceled/action_timeout": {
        "action_required/redirect": IGNORED,  # the window has passed
        "action_required/inform": IGNORED,
        "action_required/none": IGNORED,
        "ready_to_confirm": IGNORED,
        "ready_to_capture": IGNORED,
        "finished/accepted+succeeded": SUCCEEDED,  # the provider's final word wins
        "finished/cancelled": CANCELED,
        "finished/canceled": CANCELED,
        "finished/failed": FAILED,
        "finished/error": ERROR,
        "finished/nothing": IGNORED,
        "refunded": REFUNDED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
    "error": {
        "action_required/redirect": IGNORED,
        "action_required/inform": IGNORED,
        "action_required/none": IGNORED,
        "ready_to_confirm": IGNORED,
        "ready_to_capture": IGNORED,
        "finished/accepted+succeeded": SUCCEEDED,  # error is not final
        "finished/cancelled": CANCELED,
        "finished/canceled": CANCELED,
        "finished/failed": FAILED,
        "finished/error": IGNORED,
        "finished/nothing": IGNORED,
        "refunded": REFUNDED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
    "refunded": {
        "action_required/redirect": IGNORED,
        "action_required/inform": IGNORED,
        "action_required/none": IGNORED,
        "ready_to_confirm": IGNORED,
        "ready_to_capture": IGNORED,
        "finished/accepted+succeeded": IGNORED,
        "finished/cancelled": IGNORED,
        "finished/canceled": IGNORED,
        "finished/failed": IGNORED,
        "finished/error": IGNORED,
        "finished/nothing": IGNORED,
        "refunded": IGNORED,
        "refunded/chargeback": CHARGED_BACK,
        "unknown": IGNORED,
    },
}
EXPECTED["canceled/action_timeout (inferred)"] = EXPECTED["canceled/action_timeout"]
# The customer's giving up is the bridge's own word, as the timeout is: the provider's wins.
EXPECTED["canceled/customer"] = EXPECTED["canceled/action_timeout"]

# The same webhooks by other readings of the provider's clock. Before a final status the newest
# event wins, and equal or missing times leave the order of receipt (the incoming is the later);
# an older one changes nothing. A final status is never undone by a non-final webhook, and the
# exceptions among final statuses hold whatever the times.
CLOCKS = {"newer": LATER, "equal": THEN, "missing": None, "older": THEN - 60}
STILL_MOVING = ("action_required", "in_progress", "authorized")  # non-final, with a clock


def expected_at(current: str, incoming: str, clock: str) -> Expected:
    expected = EXPECTED[current][incoming]
    if clock == "older" and current in STILL_MOVING and expected is not IGNORED:
        return expected if expected[0].is_final else IGNORED
    return expected


TABLE = [
    pytest.param(
        current,
        incoming,
        clock,
        expected_at(current, incoming, clock),
        id=f"{current} + {incoming} ({clock})",
    )
    for current in EXPECTED
    for incoming in WEBHOOKS
    for clock in CLOCKS
]


def test_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(CURRENT)
    for row in EXPECTED.values():
        assert list(row) == list(WEBHOOKS)
    assert len(TABLE) == 12 * 14 * 4


@pytest.mark.parametrize(("current", "incoming", "clock", "expected"), TABLE)
def test_transition(current: str, incoming: str, clock: str, expected: Expected) -> None:
    session = CURRENT[current]
    hook = replace(WEBHOOKS[incoming], updated_at=CLOCKS[clock])
    result = lifecycle.apply(session, hook, received_at=NOW, action_timeout=TIMEOUT)
    if expected is IGNORED:
        assert result is session
        return
    assert result is not None and result is not session
    assert (result.status, result.reason) == expected
    assert result.id == session.id
    assert result.created_at == session.created_at
    assert result.updated_at == NOW
    assert result.payments == tuple(payment.summary() for payment in hook.payments)
    clocks = [time for time in (CLOCKS[clock], session.provider_updated_at) if time is not None]
    assert result.provider_updated_at == (max(clocks) if clocks else None)
    assert result.next_action == (None if result.status.is_final else hook.next_action)
    if result.status is Status.ACTION_REQUIRED:
        assert result.interaction == hook.interaction
        assert result.action_received_at == NOW
        assert result.action_expires_at == NOW + TIMEOUT
        assert lifecycle.expires_at(result) == NOW + TIMEOUT
    else:
        assert result.interaction is None
        assert result.action_expires_at is None
        assert lifecycle.expires_at(result) is None


@pytest.mark.parametrize("incoming", list(WEBHOOKS))
def test_first_webhook_of_an_unknown_session(incoming: str) -> None:
    """``apply(None, …)`` behaves as from ``pending``, and stays ``None`` when ignored."""
    hook = WEBHOOKS[incoming]
    result = lifecycle.apply(None, hook, received_at=NOW, action_timeout=TIMEOUT)
    expected = EXPECTED["pending"][incoming]
    if expected is IGNORED:
        assert result is None
        return
    assert result is not None
    assert (result.status, result.reason) == expected
    assert (result.id, result.created_at, result.updated_at) == (SESSION_ID, NOW, NOW)


# -- target_of: the README's mapping of webhooks to statuses -------------------------------------


@pytest.mark.parametrize(
    ("session_status", "payment_status", "error_code", "expected"),
    [
        ("accepted", "succeeded", None, SUCCEEDED),
        ("accepted", "pending", None, SUCCEEDED),
        ("in_progress", "succeeded", None, SUCCEEDED),
        ("cancelled", "succeeded", None, CANCELED),
        ("canceled", "pending", None, CANCELED),
        ("in_progress", "failed", "do_not_honor", (Status.FAILED, "do_not_honor")),
        ("in_progress", "failed", None, (Status.FAILED, None)),
        ("created", "failed", "do_not_honor", (Status.FAILED, "do_not_honor")),
        ("error", "failed", "internal", (Status.ERROR, "internal")),
        ("error", "succeeded", None, (Status.ERROR, None)),
        ("in_progress", "pending", None, IGNORED),
        ("in_progress", "in_progress", None, IGNORED),
        ("created", "pending", None, IGNORED),
    ],
)
def test_payment_finished_target(
    session_status: str, payment_status: str, error_code: str | None, expected: Expected
) -> None:
    hook = parsed(
        "payment_finished",
        session_status=session_status,
        payment_status=payment_status,
        error_code=error_code,
    )
    target = lifecycle.target_of(hook)
    if expected is IGNORED:
        assert target is None
    else:
        assert target is not None
        assert (target.status, target.reason) == expected


def test_payment_finished_without_payments_reads_the_session_status() -> None:
    body = webhook("payment_finished", session_status="accepted")
    body["session"]["acquiring_payments"] = []
    target = lifecycle.target_of(parse_webhook(body))
    assert target == lifecycle.Target(Status.SUCCEEDED)
    body["session"]["status"] = "in_progress"
    assert lifecycle.target_of(parse_webhook(body)) is None


def test_payment_finished_reads_the_newest_payment() -> None:
    body = webhook("payment_finished", session_status="in_progress", payment_status="failed")
    body["session"]["acquiring_payments"].append(
        {"id": "pm_2", "status": "succeeded", "amount_details": {"amount": 1, "currency": "usd"}}
    )
    assert lifecycle.target_of(parse_webhook(body)) == lifecycle.Target(Status.SUCCEEDED)


def test_chargeback_in_any_payment_marks_the_refund() -> None:
    body = webhook("payment_refunded", refunds=refunds(chargeback=True))
    body["session"]["acquiring_payments"].append({"id": "pm_2", "status": "succeeded"})
    assert lifecycle.target_of(parse_webhook(body)) == lifecycle.Target(Status.REFUNDED, CHARGEBACK)


def test_status_finality() -> None:
    assert [status for status in Status if status.is_final] == [
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELED,
        Status.ERROR,
        Status.REFUNDED,
    ]


def test_the_customers_part_ends_with_authorized_or_a_final_status() -> None:
    assert [status for status in Status if status.is_outcome] == [
        Status.AUTHORIZED,
        Status.SUCCEEDED,
        Status.FAILED,
        Status.CANCELED,
        Status.ERROR,
        Status.REFUNDED,
    ]


def test_new_session_is_pending() -> None:
    session = lifecycle.new_session("ps_9", NOW)
    assert session == Session(id="ps_9", status=Status.PENDING, created_at=NOW, updated_at=NOW)
    assert session.reason is None and session.interaction is None
    assert lifecycle.expires_at(session) is None
    assert not session.timed_out and not session.customer_returned


# -- ordering: never backwards --------------------------------------------------------------------


def deliver(session: Session | None, hook: Webhook, received_at: float) -> Session | None:
    return lifecycle.apply(session, hook, received_at=received_at, action_timeout=TIMEOUT)


def test_late_action_required_after_payment_finished_is_ignored() -> None:
    first = deliver(None, WEBHOOKS["action_required/redirect"], NOW)
    finished = deliver(first, WEBHOOKS["finished/accepted+succeeded"], NOW + 30)
    retried = deliver(finished, WEBHOOKS["action_required/redirect"], NOW + 60)
    assert retried is finished
    assert finished is not None and finished.status is Status.SUCCEEDED
    assert finished.interaction is None and lifecycle.expires_at(finished) is None


def test_payment_finished_overtaking_action_required() -> None:
    finished = deliver(None, WEBHOOKS["finished/failed"], NOW)
    late = deliver(finished, WEBHOOKS["action_required/inform"], NOW + 5)
    assert late is finished
    assert finished is not None and (finished.status, finished.reason) == FAILED


def test_refund_overtaking_payment_finished() -> None:
    refunded = deliver(None, WEBHOOKS["refunded"], NOW)
    assert refunded is not None and refunded.status is Status.REFUNDED
    assert deliver(refunded, WEBHOOKS["finished/accepted+succeeded"], NOW + 5) is refunded


def test_replayed_webhooks_change_nothing() -> None:
    session: Session | None = None
    for name in (
        "action_required/redirect",
        "ready_to_capture",
        "finished/accepted+succeeded",
        "refunded/chargeback",
    ):
        session = deliver(session, WEBHOOKS[name], NOW)
        assert deliver(session, WEBHOOKS[name], NOW + 1) is session
    assert session is not None and (session.status, session.reason) == CHARGED_BACK


def test_webhook_without_payments_keeps_the_known_payments() -> None:
    first = deliver(None, WEBHOOKS["action_required/redirect"], NOW)
    body = webhook("payment_finished", SESSION_ID, session_status="accepted")
    del body["session"]["acquiring_payments"]
    finished = deliver(first, parse_webhook(body), NOW + 10)
    assert first is not None and finished is not None
    assert finished.status is Status.SUCCEEDED
    assert finished.payments == first.payments
    assert finished.payments[0]["id"] == "pm_1313"
    assert "payment_details" not in finished.payments[0]


# -- the action window ----------------------------------------------------------------------------


def action_session(received_at: float = NOW) -> Session:
    session = deliver(None, WEBHOOKS["action_required/redirect"], received_at)
    assert session is not None
    return session


def test_window_is_counted_from_received_at() -> None:
    session = action_session(NOW)
    assert session.action_received_at == NOW
    assert session.action_expires_at == NOW + TIMEOUT
    assert lifecycle.expires_at(session) == NOW + TIMEOUT


def test_window_ignores_the_payloads_own_timestamps() -> None:
    old = webhook("action_required", SESSION_ID)
    new = webhook("action_required", SESSION_ID)
    for body, stamp in ((old, "2001-01-01T00:00:00.000000Z"), (new, "2099-12-31T23:59:59.999Z")):
        body["session"]["created_at"] = body["session"]["updated_at"] = stamp
        body["session"]["acquiring_payments"][0]["created_at"] = stamp
    from_old = deliver(None, parse_webhook(old), NOW)
    from_new = deliver(None, parse_webhook(new), NOW)
    assert from_old is not None and from_new is not None
    assert from_old.action_expires_at == from_new.action_expires_at == NOW + TIMEOUT
    assert from_old.updated_at == from_new.updated_at == NOW


def test_at_before_expiry_is_the_same_session() -> None:
    session = action_session()
    assert lifecycle.at(session, NOW) is session
    assert lifecycle.at(session, NOW + TIMEOUT - 0.001) is session


@pytest.mark.parametrize("later", [0.0, 0.5, 10_000.0])
def test_at_from_expiry_on_is_canceled(later: float) -> None:
    session = action_session()
    expired = lifecycle.at(session, NOW + TIMEOUT + later)
    assert expired.status is Status.CANCELED
    assert expired.reason == ACTION_TIMEOUT
    assert expired.timed_out
    assert expired.interaction is None
    assert expired.updated_at == NOW + TIMEOUT  # when the window ended, not when it was read
    waiting = lifecycle.at(replace(session, next_action="confirm"), NOW + TIMEOUT + later)
    assert waiting.next_action is None  # final: the provider waits for nothing now
    assert lifecycle.expires_at(expired) is None
    assert session.status is Status.ACTION_REQUIRED  # the stored record is untouched


@pytest.mark.parametrize("name", ["pending", "in_progress", "succeeded", "canceled", "error"])
def test_at_leaves_other_statuses_alone(name: str) -> None:
    session = replace(CURRENT[name], action_expires_at=NOW - 1)
    assert lifecycle.at(session, NOW) is session


def test_timed_out_only_for_the_bridges_inference() -> None:
    assert CURRENT["canceled/action_timeout"].timed_out
    assert not CURRENT["canceled"].timed_out
    assert not replace(CURRENT["failed"], reason=ACTION_TIMEOUT).timed_out


def test_webhook_arriving_exactly_at_expiry_sees_the_timeout() -> None:
    session = action_session()
    expiry = NOW + TIMEOUT
    assert deliver(session, WEBHOOKS["ready_to_capture"], expiry) is session
    assert deliver(session, WEBHOOKS["action_required/inform"], expiry) is session
    captured = deliver(session, WEBHOOKS["ready_to_capture"], expiry - 0.001)
    assert captured is not None and captured.status is Status.AUTHORIZED


# Each final webhook, and the status it gives whatever the session had.
FINAL_WORDS = [
    ("finished/accepted+succeeded", SUCCEEDED),
    ("finished/canceled", CANCELED),
    ("finished/failed", FAILED),
    ("finished/error", ERROR),
    ("refunded", REFUNDED),
]


@pytest.mark.parametrize(("incoming", "expected"), FINAL_WORDS)
def test_final_webhook_overrides_the_timeout(incoming: str, expected: Expected) -> None:
    session = action_session()
    late = NOW + TIMEOUT + 600
    assert lifecycle.at(session, late).timed_out
    result = deliver(session, WEBHOOKS[incoming], late)
    assert result is not None and (result.status, result.reason) == expected
    assert result.updated_at == late
    assert lifecycle.at(result, late + TIMEOUT) is result


def test_second_action_with_another_interaction_replaces_it_and_restarts_the_window() -> None:
    first = action_session(NOW)
    later = NOW + 1000
    second = deliver(first, WEBHOOKS["action_required/inform"], later)
    assert second is not None and second is not first
    assert second.status is Status.ACTION_REQUIRED
    assert second.interaction == inform()
    assert second.action_received_at == later
    assert lifecycle.expires_at(second) == later + TIMEOUT
    assert second.updated_at == later
    # The first window's end no longer applies.
    assert lifecycle.at(second, NOW + TIMEOUT + 1) is second


def test_second_action_with_the_same_interaction_keeps_its_window() -> None:
    """A newer copy of the same instruction (a re-serialised retry) is not a new bank step; only
    the provider's clock moves on, so an older webhook still cannot come after it."""
    first = action_session(NOW)
    newer = parsed("action_required", at=LATER + 100, interaction=NEW_REDIRECT)
    again = deliver(first, newer, NOW + 1000)
    assert again is not None and first.provider_updated_at == LATER
    assert again == replace(first, provider_updated_at=LATER + 100)
    assert lifecycle.expires_at(again) == NOW + TIMEOUT
    assert deliver(again, parsed("ready_to_confirm", at=LATER + 50), NOW + 1001) is again
    same = parsed("action_required", at=LATER, interaction=NEW_REDIRECT)
    assert deliver(first, same, NOW + 1000) is first


def test_new_action_clears_the_reason_of_the_old() -> None:
    session = replace(action_session(), reason="something_stale")
    renewed = deliver(session, WEBHOOKS["action_required/inform"], NOW + 10)
    assert renewed is not None and renewed.reason is None


# -- customer_returned ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action_received_at", "returned_at", "expected"),
    [
        (NOW, None, False),
        (None, NOW, False),
        (NOW, NOW - 1, False),
        (NOW, NOW, True),
        (NOW, NOW + 1, True),
    ],
)
def test_customer_returned(
    action_received_at: float | None, returned_at: float | None, expected: bool
) -> None:
    session = stored(
        Status.ACTION_REQUIRED, action_received_at=action_received_at, returned_at=returned_at
    )
    assert session.customer_returned is expected


def test_a_new_action_resets_customer_returned() -> None:
    session = replace(action_session(NOW), returned_at=NOW + 50)
    assert session.customer_returned
    renewed = deliver(session, WEBHOOKS["action_required/inform"], NOW + 100)
    assert renewed is not None
    assert renewed.returned_at == NOW + 50
    assert not renewed.customer_returned


def test_return_survives_the_outcome() -> None:
    session = replace(action_session(NOW), returned_at=NOW + 50)
    finished = deliver(session, WEBHOOKS["finished/accepted+succeeded"], NOW + 60)
    assert finished is not None and finished.customer_returned


# -- expires_at -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pending", None),
        ("action_required", NOW - 600 + TIMEOUT),
        ("in_progress", None),
        ("succeeded", None),
        ("canceled/action_timeout", None),
        ("refunded", None),
    ],
)
def test_expires_at(name: str, expected: float | None) -> None:
    assert lifecycle.expires_at(CURRENT[name]) == expected


# -- property: every delivery order converges -----------------------------------------------------


def sequence(*steps: tuple[str, dict[str, Any]]) -> list[Webhook]:
    """Webhooks as the provider sends them, one minute apart by its clock."""
    return [parsed(kind, at=THEN + 60 * n, **fields) for n, (kind, fields) in enumerate(steps)]


CONFIRM: tuple[str, dict[str, Any]] = ("ready_to_confirm", {})
BANK: tuple[str, dict[str, Any]] = ("action_required", {"interaction": OLD_REDIRECT})
SECOND_BANK: tuple[str, dict[str, Any]] = ("action_required", {"interaction": NEW_REDIRECT})
QR: tuple[str, dict[str, Any]] = ("action_required", {"interaction": inform()})
HELD: tuple[str, dict[str, Any]] = ("ready_to_capture", {})
PAID: tuple[str, dict[str, Any]] = (
    "payment_finished",
    {"session_status": "accepted", "payment_status": "succeeded"},
)
RELEASED: tuple[str, dict[str, Any]] = (
    "payment_finished",
    {"session_status": "cancelled", "payment_status": "failed"},
)
DECLINED_: tuple[str, dict[str, Any]] = (
    "payment_finished",
    {"session_status": "in_progress", "payment_status": "failed", "error_code": DECLINED},
)
FAULT: tuple[str, dict[str, Any]] = (
    "payment_finished",
    {"session_status": "error", "payment_status": "failed", "error_code": PROVIDER_FAULT},
)
REFUND: tuple[str, dict[str, Any]] = ("payment_refunded", {"refunds": refunds(chargeback=False)})
CHARGEBACK_: tuple[str, dict[str, Any]] = (
    "payment_refunded",
    {"refunds": refunds(chargeback=True)},
)

# The orders Smart Glocal documents its webhooks to come in (the README's "The flows the bridge
# follows"), with the endings the final-status rules add.
DOCUMENTED = {
    "confirm first, 3-D Secure": sequence(CONFIRM, BANK, PAID),
    "confirm first, declined": sequence(CONFIRM, BANK, DECLINED_),
    "automatic confirmation": sequence(BANK, PAID),
    "the provider's widget": sequence(BANK, CONFIRM, PAID),
    "recurring, merchant-initiated": sequence(CONFIRM, PAID),
    "two-stage, captured": sequence(CONFIRM, BANK, HELD, PAID),
    "two-stage, canceled": sequence(CONFIRM, BANK, HELD, RELEASED),
    "two-stage, no 3-D Secure": sequence(CONFIRM, HELD, PAID),
    "a second bank step": sequence(CONFIRM, BANK, SECOND_BANK, PAID),
    "a QR code": sequence(QR, PAID),
    "error, then the outcome": sequence(CONFIRM, BANK, FAULT, PAID),
    "refunded": sequence(CONFIRM, BANK, PAID, REFUND),
    "charged back": sequence(BANK, PAID, CHARGEBACK_),
}
# Every prefix too: a history may stop anywhere (waiting for the bank, held for capture).
HISTORIES = {
    f"{name} [:{end}]": history[:end]
    for name, history in DOCUMENTED.items()
    for end in range(1, len(history) + 1)
}


def delivered(deliveries: list[tuple[Webhook, float]]) -> Session:
    session: Session | None = None
    for incoming, received_at in deliveries:
        session = deliver(session, incoming, received_at)
    assert session is not None
    return session


def seen(session: Session) -> tuple[Any, ...]:
    """What the customer and the partner are told: status, reason, instruction, next action."""
    return (session.status, session.reason, session.interaction, session.next_action)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[Webhook], list[tuple[Webhook, float]]]:
    """A history, and its deliveries: in any order, some repeated (a retry, or a copy serialised
    anew, which parses the same) anywhere after the first, received within the action window."""
    history = draw(st.sampled_from(list(HISTORIES.values())))
    order = list(draw(st.permutations(history)))
    for repeat in draw(st.lists(st.sampled_from(history), max_size=4)):
        first = order.index(repeat)
        order.insert(draw(st.integers(first + 1, len(order))), repeat)
    gaps = draw(st.lists(st.floats(0, TIMEOUT / 20), min_size=len(order), max_size=len(order)))
    received = itertools.accumulate(gaps, initial=NOW)
    return history, list(zip(order, received, strict=False))


@settings(max_examples=600)
@given(deliveries())
def test_every_delivery_order_converges(
    case: tuple[list[Webhook], list[tuple[Webhook, float]]],
) -> None:
    history, timed = case
    in_order = delivered([(hook, NOW + step) for step, hook in enumerate(history)])
    result = delivered(timed)
    assert seen(result) == seen(in_order)
    if result.status is Status.ACTION_REQUIRED:  # no late copy restarted the window
        first = min(at for hook, at in timed if hook.interaction == result.interaction)
        assert result.action_received_at == first
        assert lifecycle.expires_at(result) == first + TIMEOUT


@pytest.mark.parametrize("history", HISTORIES.values(), ids=HISTORIES.keys())
def test_every_permutation_converges_exhaustively(history: list[Webhook]) -> None:
    in_order = delivered([(hook, NOW + step) for step, hook in enumerate(history)])
    for order in itertools.permutations(history):
        result = delivered([(hook, NOW + 60 * step) for step, hook in enumerate(order)])
        assert seen(result) == seen(in_order), [item.type for item in order]


@pytest.mark.parametrize(
    ("name", "final"),
    [
        ("confirm first, 3-D Secure", SUCCEEDED),
        ("two-stage, captured", SUCCEEDED),
        ("two-stage, canceled", CANCELED),
        ("confirm first, declined", FAILED),
        ("error, then the outcome", SUCCEEDED),
        ("refunded", REFUNDED),
        ("charged back", CHARGED_BACK),
    ],
)
def test_a_final_webhook_wins_over_the_bridges_own_timeout_in_any_order(
    name: str, final: tuple[Status, str | None]
) -> None:
    """Gaps longer than the action window: the bridge infers a timeout, the provider's final
    word still wins."""
    for order in itertools.permutations(DOCUMENTED[name]):
        result = delivered([(hook, NOW + 2 * TIMEOUT * step) for step, hook in enumerate(order)])
        seen_late = lifecycle.at(result, NOW + 100 * TIMEOUT)
        assert (seen_late.status, seen_late.reason) == final, [item.type for item in order]


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        (sequence(CONFIRM, BANK), AR),
        (sequence(BANK, CONFIRM), IN_PROGRESS),
        (sequence(CONFIRM, BANK, HELD), AUTHORIZED),
        (sequence(CONFIRM, BANK, SECOND_BANK), AR),
    ],
)
def test_in_order_the_newest_provider_event_wins(
    history: list[Webhook], expected: tuple[Status, str | None]
) -> None:
    """The convergence tests compare with the in-order delivery; here that delivery itself."""
    result = delivered([(hook, NOW + step) for step, hook in enumerate(history)])
    assert (result.status, result.reason) == expected
    assert result.interaction == (history[-1].interaction if expected == AR else None)
    assert result.next_action == {"ready_to_confirm": "confirm", "ready_to_capture": "capture"}.get(
        history[-1].type
    )


def test_a_charged_back_session_keeps_its_reason_whatever_refund_comes_next() -> None:
    refund = parse_webhook(webhook("payment_refunded", refunds=refunds(chargeback=False)))
    chargeback = parse_webhook(webhook("payment_refunded", refunds=refunds(chargeback=True)))
    for first, second in ((refund, chargeback), (chargeback, refund)):
        session = lifecycle.apply(None, first, received_at=1.0, action_timeout=3600)
        session = lifecycle.apply(session, second, received_at=2.0, action_timeout=3600)
        assert session is not None
        assert (session.status, session.reason) == (Status.REFUNDED, CHARGEBACK)


# -- the customer gives up --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pending", "in_progress", "action_required"])
def test_a_customer_cancels_while_their_part_is_not_over(name: str) -> None:
    session = replace(CURRENT[name], next_action="confirm")
    canceled = lifecycle.cancel(session, NOW)
    assert (canceled.status, canceled.reason) == (Status.CANCELED, CUSTOMER)
    assert canceled.canceled_here and not canceled.timed_out
    assert canceled.updated_at == NOW
    assert canceled.interaction is None and lifecycle.expires_at(canceled) is None
    assert canceled.action_received_at == session.action_received_at
    assert canceled.next_action is None  # final: the provider waits for nothing now
    assert canceled.payments == session.payments
    assert canceled.provider_updated_at == session.provider_updated_at
    assert lifecycle.at(canceled, NOW + 10 * TIMEOUT) is canceled


@pytest.mark.parametrize(
    "name",
    [
        "authorized",
        "succeeded",
        "failed",
        "canceled",
        "canceled/action_timeout",
        "canceled/action_timeout (inferred)",
        "canceled/customer",
        "error",
        "refunded",
    ],
)
def test_a_cancel_after_the_outcome_changes_nothing(name: str) -> None:
    session = CURRENT[name]
    assert lifecycle.cancel(session, NOW) is session


def test_a_cancel_once_the_window_passed_leaves_the_timeout() -> None:
    session = action_session()
    expiry = NOW + TIMEOUT
    assert lifecycle.cancel(session, expiry) is session
    assert lifecycle.at(session, expiry).timed_out
    just_before = lifecycle.cancel(session, expiry - 0.001)
    assert just_before.reason == CUSTOMER


def test_a_cancel_after_the_customer_returned_still_counts() -> None:
    session = replace(action_session(), returned_at=NOW + 30)
    assert lifecycle.cancel(session, NOW + 60).reason == CUSTOMER


@pytest.mark.parametrize(("incoming", "expected"), FINAL_WORDS)
def test_the_providers_final_status_replaces_the_customers_cancel(
    incoming: str, expected: Expected
) -> None:
    canceled = lifecycle.cancel(action_session(), NOW + 60)
    # Whatever the provider's clock says: the cancel kept the provider's last time.
    for clock in CLOCKS.values():
        hook = replace(WEBHOOKS[incoming], updated_at=clock)
        result = deliver(canceled, hook, NOW + 120)
        assert result is not None and (result.status, result.reason) == expected


@pytest.mark.parametrize(
    "incoming", ["action_required/redirect", "ready_to_confirm", "ready_to_capture", "unknown"]
)
def test_a_non_final_webhook_never_undoes_the_customers_cancel(incoming: str) -> None:
    canceled = lifecycle.cancel(action_session(), NOW + 60)
    assert deliver(canceled, WEBHOOKS[incoming], NOW + 120) is canceled
