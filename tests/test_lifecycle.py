"""The state machine, without an app: every (status, webhook) pair, the action window, ordering."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import lifecycle
from app.lifecycle import ACTION_TIMEOUT, CHARGEBACK, Session, Status
from app.provider import Webhook, parse_webhook

from .payloads import inform, redirect, webhook

NOW = 1_800_000_000.0  # when the webhook under test is received
TIMEOUT = 3600.0
SESSION_ID = "ps_1"
DECLINED = "insufficient_funds"
PROVIDER_FAULT = "internal_error"

OLD_REDIRECT = redirect(url="https://acs.bank.test/old?foo=bar", params={"PaReq": "old"})
NEW_REDIRECT = redirect(url="https://acs.bank.test/new?foo=bar", params={"PaReq": "new"})


def parsed(kind: str, **fields: Any) -> Webhook:
    return parse_webhook(webhook(kind, SESSION_ID, **fields))


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
    }
    return Session(**(base | fields))


CURRENT: dict[str, Session] = {
    "pending": stored(Status.PENDING),
    "action_required": stored(
        Status.ACTION_REQUIRED,
        interaction=OLD_REDIRECT,
        action_received_at=NOW - 600,
        action_expires_at=NOW - 600 + TIMEOUT,
    ),
    "in_progress": stored(Status.IN_PROGRESS),
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
    "error": stored(Status.ERROR, reason=PROVIDER_FAULT),
    "refunded": stored(Status.REFUNDED),
}

# -- the expected table, written out by hand from CONTRACT.md "Statuses" and lifecycle's docstring.
# IGNORED: the webhook changes nothing and apply() hands back the very same object.

IGNORED = None
AR = (Status.ACTION_REQUIRED, None)
IN_PROGRESS = (Status.IN_PROGRESS, None)
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
        "ready_to_capture": IN_PROGRESS,
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
        "ready_to_confirm": IN_PROGRESS,
        "ready_to_capture": IN_PROGRESS,
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
        "action_required/redirect": IGNORED,  # never backwards
        "action_required/inform": IGNORED,
        "action_required/none": IGNORED,
        "ready_to_confirm": IGNORED,
        "ready_to_capture": IGNORED,
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

TABLE = [
    pytest.param(current, incoming, expected, id=f"{current} + {incoming}")
    for current, row in EXPECTED.items()
    for incoming, expected in row.items()
]


def test_table_covers_every_pair() -> None:
    assert set(EXPECTED) == set(CURRENT)
    for row in EXPECTED.values():
        assert list(row) == list(WEBHOOKS)
    assert len(TABLE) == 10 * 14


@pytest.mark.parametrize(("current", "incoming", "expected"), TABLE)
def test_transition(current: str, incoming: str, expected: Expected) -> None:
    session = CURRENT[current]
    hook = WEBHOOKS[incoming]
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


# -- target_of: the contract's mapping table ------------------------------------------------------


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
    assert captured is not None and captured.status is Status.IN_PROGRESS


@pytest.mark.parametrize(
    ("incoming", "expected"),
    [
        ("finished/accepted+succeeded", SUCCEEDED),
        ("finished/canceled", CANCELED),
        ("finished/failed", FAILED),
        ("finished/error", ERROR),
        ("refunded", REFUNDED),
    ],
)
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


def test_second_action_with_the_same_interaction_changes_nothing() -> None:
    first = action_session(NOW)
    again = deliver(
        first,
        parse_webhook(webhook("action_required", SESSION_ID, interaction=NEW_REDIRECT)),
        NOW + 1000,
    )
    assert again is first
    assert lifecycle.expires_at(first) == NOW + TIMEOUT


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


def hook(name: str) -> Webhook:
    return WEBHOOKS[name]


FIRST_ACTION = parsed("action_required", interaction=OLD_REDIRECT)

# Valid histories of one session, each with the final (status, reason) it must end in.
HISTORIES: list[tuple[list[Webhook], tuple[Status, str | None]]] = [
    ([hook("action_required/redirect"), hook("finished/accepted+succeeded")], SUCCEEDED),
    (
        [
            hook("action_required/redirect"),
            hook("ready_to_capture"),
            hook("finished/accepted+succeeded"),
        ],
        SUCCEEDED,
    ),
    (
        [
            hook("action_required/redirect"),
            hook("ready_to_capture"),
            hook("finished/accepted+succeeded"),
            hook("refunded"),
        ],
        REFUNDED,
    ),
    (
        [
            hook("action_required/redirect"),
            hook("finished/accepted+succeeded"),
            hook("refunded/chargeback"),
        ],
        CHARGED_BACK,
    ),
    (
        [
            hook("ready_to_confirm"),
            hook("action_required/redirect"),
            hook("finished/accepted+succeeded"),
        ],
        SUCCEEDED,
    ),
    ([hook("action_required/redirect"), hook("finished/failed")], FAILED),
    ([hook("action_required/inform"), hook("finished/cancelled")], CANCELED),
    ([hook("action_required/redirect"), hook("finished/canceled")], CANCELED),
    ([hook("action_required/redirect"), hook("finished/error")], ERROR),
    (
        [
            hook("action_required/redirect"),
            hook("finished/error"),
            hook("finished/accepted+succeeded"),
        ],
        SUCCEEDED,
    ),
    ([hook("action_required/redirect"), hook("finished/error"), hook("finished/failed")], FAILED),
    (
        [FIRST_ACTION, hook("action_required/redirect"), hook("finished/accepted+succeeded")],
        SUCCEEDED,
    ),
    (
        [
            hook("action_required/redirect"),
            hook("action_required/redirect"),
            hook("action_required/none"),
            hook("unknown"),
            hook("finished/failed"),
        ],
        FAILED,
    ),
]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[tuple[Webhook, float]], tuple[Status, str | None]]:
    history, final = draw(st.sampled_from(HISTORIES))
    order = draw(st.permutations(history))
    # Gaps may exceed the action window: a final webhook must still win over the inference.
    gaps = draw(st.lists(st.floats(0, 2 * TIMEOUT), min_size=len(order), max_size=len(order)))
    received, timed = NOW, []
    for webhook_, gap in zip(order, gaps, strict=True):
        received += gap
        timed.append((webhook_, received))
    return timed, final


@settings(max_examples=400)
@given(deliveries())
def test_every_delivery_order_converges(
    case: tuple[list[tuple[Webhook, float]], tuple[Status, str | None]],
) -> None:
    timed, final = case
    session: Session | None = None
    for incoming, received_at in timed:
        session = deliver(session, incoming, received_at)
    assert session is not None
    seen = lifecycle.at(session, timed[-1][1] + 10 * TIMEOUT)
    assert (seen.status, seen.reason) == final


@pytest.mark.parametrize(("history", "final"), HISTORIES)
def test_every_permutation_converges_exhaustively(
    history: list[Webhook], final: tuple[Status, str | None]
) -> None:
    for order in itertools.permutations(history):
        session: Session | None = None
        for step, incoming in enumerate(order):
            session = deliver(session, incoming, NOW + 60 * step)
        assert session is not None
        assert (session.status, session.reason) == final, [item.type for item in order]


def test_a_charged_back_session_keeps_its_reason_whatever_refund_comes_next() -> None:
    refund = parse_webhook(webhook("payment_refunded", refunds=refunds(chargeback=False)))
    chargeback = parse_webhook(webhook("payment_refunded", refunds=refunds(chargeback=True)))
    for first, second in ((refund, chargeback), (chargeback, refund)):
        session = lifecycle.apply(None, first, received_at=1.0, action_timeout=3600)
        session = lifecycle.apply(session, second, received_at=2.0, action_timeout=3600)
        assert session is not None
        assert (session.status, session.reason) == (Status.REFUNDED, CHARGEBACK)
