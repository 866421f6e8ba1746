"""Smart Glocal payloads read without an app: both API shapes, malformed bodies, field text."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.provider import MalformedWebhookError, Payment, Webhook, field_text, parse_webhook

from .payloads import inform, payment, redirect, webhook


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_both_api_shapes(api: str) -> None:
    body = webhook("action_required", "ps_3230", api=api)
    assert ("acquiring_payments" if api == "v1" else "payment_list") in body["session"]
    parsed = parse_webhook(body)
    assert parsed == Webhook(
        type="action_required",
        session_id="ps_3230",
        session_status="in_progress",
        payments=(
            Payment(
                id="pm_1313",
                status="pending",
                amount=15000,
                currency="usd",
                created_at="2024-05-27T02:03:00.000000Z",
                finished_at=None,
                error_code=None,
                chargeback=False,
                interaction=redirect(),
            ),
        ),
        updated_at=datetime(2027, 1, 15, 6, 0, tzinfo=UTC).timestamp(),
    )
    assert parsed.interaction == redirect()


def test_published_example_verbatim() -> None:
    """The ``action_required`` example from the provider's page, field for field."""
    body = {
        "type": "action_required",
        "session": {
            "id": "ps_3230",
            "status": "in_progress",
            "created_at": "2024-05-27T02:03:00.000000Z",
            "updated_at": "2024-05-27T02:03:00.000000Z",
            "payment_list": [
                {
                    "id": "pm_1313",
                    "status": "pending",
                    "created_at": "2024-05-27T02:03:00.000000Z",
                    "customer": {"reference": "user@sg.com"},
                    "payment_details": {
                        "type": "card",
                        "card": {"brand": "visa", "last4": "8801", "bin": "444600"},
                    },
                    "amount_details": {"amount": 15000, "currency": "usd"},
                    "transaction_info": {"rrn": "425307614918", "auth_code": "057441"},
                    "customer_interaction": {
                        "type": "redirect",
                        "redirect": {
                            "url": "https://website.com?foo=bar",
                            "base_url": "https://website.com",
                            "method": "POST",
                            "qs": {"foo": "bar"},
                            "params": {"PaReq": "sdfew^//asdhbv", "MD": "abc75daefnn"},
                        },
                    },
                }
            ],
        },
    }
    parsed = parse_webhook(body)
    assert parsed.interaction == body["session"]["payment_list"][0]["customer_interaction"]
    assert parsed.payments[0].amount == 15000


def test_v2_list_is_read_first_when_both_are_present() -> None:
    body = webhook("payment_finished", api="v2")
    body["session"]["acquiring_payments"] = [payment("failed")]
    assert [item.status for item in parse_webhook(body).payments] == ["succeeded"]


def test_a_payment_list_that_is_not_a_list_falls_back_to_the_other_name() -> None:
    body = webhook("payment_finished", api="v1")
    body["session"]["payment_list"] = {"0": payment("failed")}
    assert [item.status for item in parse_webhook(body).payments] == ["succeeded"]


def test_no_payment_list_means_no_payments() -> None:
    body = webhook("payment_finished")
    del body["session"]["acquiring_payments"]
    parsed = parse_webhook(body)
    assert parsed.payments == ()
    assert parsed.interaction is None


def test_unknown_fields_are_ignored() -> None:
    plain = parse_webhook(webhook("action_required"))
    body = webhook("action_required", api_version="2.3", delivery={"attempt": 4})
    body["session"]["next_action"] = "capture"
    body["session"]["brand_new_field"] = {"nested": [1, 2, 3]}
    item = body["session"]["acquiring_payments"][0]
    item["metadata"] = {"order": "A-1"}
    item["surprise"] = None
    item["amount_details"]["fee"] = 10
    item["customer_interaction"]["redirect"]["tds_data"] = {"version": "2.2.0"}
    parsed = parse_webhook(body)
    assert parsed.type == plain.type
    assert parsed.session_id == plain.session_id
    assert parsed.session_status == plain.session_status
    assert parsed.payments[0].summary() == plain.payments[0].summary()
    # The bank instruction is kept as sent, new fields included.
    assert parsed.interaction is not None
    assert parsed.interaction["redirect"]["tds_data"] == {"version": "2.2.0"}


def test_unknown_type_is_read_not_rejected() -> None:
    parsed = parse_webhook(webhook("session_reopened", session_status="created"))
    assert (parsed.type, parsed.session_id, parsed.session_status) == (
        "session_reopened",
        "ps_1",
        "created",
    )


def test_session_status_that_is_not_text_is_none() -> None:
    body = webhook("payment_finished")
    body["session"]["status"] = 3
    assert parse_webhook(body).session_status is None
    del body["session"]["status"]
    assert parse_webhook(body).session_status is None


def test_parsing_leaves_the_document_untouched() -> None:
    body = webhook("action_required")
    before = copy.deepcopy(body)
    parse_webhook(body)
    assert body == before


# -- malformed ------------------------------------------------------------------------------------


def malformed(change: str) -> Any:
    body = webhook("payment_finished")
    session = body["session"]
    if change == "no type":
        del body["type"]
    elif change == "type null":
        body["type"] = None
    elif change == "type number":
        body["type"] = 7
    elif change == "type list":
        body["type"] = ["payment_finished"]
    elif change == "type empty":
        body["type"] = ""
    elif change == "no session":
        del body["session"]
    elif change == "session null":
        body["session"] = None
    elif change == "session string":
        body["session"] = "ps_1"
    elif change == "session list":
        body["session"] = [session]
    elif change == "no session.id":
        del session["id"]
    elif change == "session.id empty":
        session["id"] = ""
    elif change == "session.id null":
        session["id"] = None
    elif change == "session.id number":
        session["id"] = 3230
    elif change == "session.id object":
        session["id"] = {"id": "ps_1"}
    elif change == "session.id too long":
        session["id"] = "ps_" + "x" * 254
    else:
        raise AssertionError(change)
    return body


@pytest.mark.parametrize(
    "change",
    [
        "no type",
        "type null",
        "type number",
        "type list",
        "type empty",
        "no session",
        "session null",
        "session string",
        "session list",
        "no session.id",
        "session.id empty",
        "session.id null",
        "session.id number",
        "session.id object",
        "session.id too long",
    ],
)
def test_malformed_webhook(change: str) -> None:
    with pytest.raises(MalformedWebhookError):
        parse_webhook(malformed(change))


@pytest.mark.parametrize(
    "document", [None, [], [webhook("payment_finished")], "payment_finished", 1, 1.5, True]
)
def test_not_an_object(document: Any) -> None:
    with pytest.raises(MalformedWebhookError, match="object"):
        parse_webhook(document)


def test_malformed_is_a_value_error() -> None:
    assert issubclass(MalformedWebhookError, ValueError)


def test_longest_session_id_accepted() -> None:
    body = webhook("payment_finished", "ps_" + "x" * 253)
    assert len(parse_webhook(body).session_id) == 256


# -- payments -------------------------------------------------------------------------------------


def test_payments_that_are_not_objects_are_skipped() -> None:
    body = webhook("payment_finished")
    body["session"]["acquiring_payments"] = [
        None,
        "pm_1",
        15000,
        ["pm_2"],
        True,
        payment("failed"),
        None,
        payment("succeeded"),
    ]
    parsed = parse_webhook(body)
    assert [item.status for item in parsed.payments] == ["failed", "succeeded"]


def test_payment_fields() -> None:
    item = payment("failed", error_code="do_not_honor")
    item["finished_at"] = "2024-05-27T02:05:00.000000Z"
    body = webhook("payment_finished")
    body["session"]["acquiring_payments"] = [item]
    read = parse_webhook(body).payments[0]
    assert read.error_code == "do_not_honor"
    assert read.finished_at == "2024-05-27T02:05:00.000000Z"
    assert read.summary() == {
        "id": "pm_1313",
        "status": "failed",
        "amount": 15000,
        "currency": "usd",
        "created_at": "2024-05-27T02:03:00.000000Z",
        "finished_at": "2024-05-27T02:05:00.000000Z",
    }


def test_summary_carries_no_card_customer_or_bank_data() -> None:
    read = parse_webhook(webhook("action_required")).payments[0]
    text = repr(read.summary())
    for secret in ("444600", "8801", "user@sg.com", "425307614918", "057441", "PaReq", "acs."):
        assert secret not in text


@pytest.mark.parametrize(
    "item",
    [
        {},
        {"id": 5, "status": ["succeeded"], "created_at": 1716775380, "finished_at": False},
        {"amount_details": "15000 usd", "error": "declined", "refunds": "yes"},
        {"amount_details": {"amount": "15000", "currency": 840}},
        {"amount_details": {"amount": 150.5, "currency": None}},
        {"amount_details": {"amount": True}},
        {"error": {"code": 51}},
        {"refunds": [None, "rf_1", {"is_chargeback": "true"}, {"is_chargeback": 1}]},
    ],
)
def test_payment_fields_of_the_wrong_kind_are_none(item: dict[str, Any]) -> None:
    body = webhook("payment_finished")
    body["session"]["acquiring_payments"] = [item]
    assert parse_webhook(body).payments == (Payment(id=None, status=None),)


@pytest.mark.parametrize(
    ("refunds", "chargeback"),
    [
        (None, False),
        ([], False),
        ([{"id": "rf_1"}], False),
        ([{"id": "rf_1", "is_chargeback": False}], False),
        ([{"id": "rf_1", "is_chargeback": True}], True),
        ([{"id": "rf_1", "is_chargeback": False}, {"id": "rf_2", "is_chargeback": True}], True),
        ([None, {"id": "rf_2", "is_chargeback": True}], True),
    ],
)
def test_chargeback(refunds: list[Any] | None, chargeback: bool) -> None:
    body = webhook("payment_refunded", refunds=refunds)
    assert parse_webhook(body).payments[0].chargeback is chargeback


# -- customer_interaction -------------------------------------------------------------------------


@pytest.mark.parametrize("interaction", [redirect(), redirect(method="GET"), inform()])
def test_redirect_and_inform_are_kept_as_sent(interaction: dict[str, Any]) -> None:
    parsed = parse_webhook(webhook("action_required", interaction=interaction))
    assert parsed.interaction == interaction
    assert parsed.payments[0].interaction == interaction


@pytest.mark.parametrize(
    "interaction",
    [
        {**redirect(), "inform": {"qr": {"content": "x"}}, "comment": "hi"},
        {"type": "redirect", "redirect": {**redirect()["redirect"], "tds_data": {"v": "2.2"}}},
        {"type": "three_ds_method", "three_ds_method": {"url": "https://acs.bank.test/m"}},
        {"type": "REDIRECT", "REDIRECT": redirect()["redirect"]},
        {"type": "redirect"},
        {"type": "redirect", "redirect": None},
        {"type": "inform", "inform": {"notification": {"type": "sber_pay_widget"}}},
        {"type": "inform", "inform": [inform()["inform"]]},
    ],
)
def test_an_interaction_is_kept_as_sent_whatever_its_type(interaction: dict[str, Any]) -> None:
    """Stored whole: the page decides what it can show, and ``tds_data`` is never read."""
    parsed = parse_webhook(webhook("action_required", interaction=interaction))
    assert parsed.payments[0].interaction == interaction
    assert parsed.interaction == interaction


@pytest.mark.parametrize(
    "interaction",
    [
        {"redirect": redirect()["redirect"]},
        {"type": None, "redirect": redirect()["redirect"]},
        {"type": "", "redirect": redirect()["redirect"]},
        {"type": 1},
        "redirect",
        ["redirect"],
    ],
)
def test_an_interaction_without_a_type_is_no_interaction(interaction: Any) -> None:
    parsed = parse_webhook(webhook("action_required", interaction=interaction))
    assert parsed.payments[0].interaction is None
    assert parsed.interaction is None


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2024-05-27T02:03:00.000000Z", datetime(2024, 5, 27, 2, 3, tzinfo=UTC)),
        ("2024-05-27T02:03:00.123456Z", datetime(2024, 5, 27, 2, 3, 0, 123456, tzinfo=UTC)),
        ("2024-05-27T05:03:00+03:00", datetime(2024, 5, 27, 2, 3, tzinfo=UTC)),
        ("2024-05-27T02:03:00", datetime(2024, 5, 27, 2, 3, tzinfo=UTC)),  # no zone: UTC
        ("2024-05-27 02:03:00Z", datetime(2024, 5, 27, 2, 3, tzinfo=UTC)),
        ("2024-05-27t02:03:00.5z", datetime(2024, 5, 27, 2, 3, 0, 500000, tzinfo=UTC)),
        ("2016-12-31T23:59:60Z", datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
    ],
)
def test_the_providers_clock_is_read_from_session_updated_at(
    stamp: str, expected: datetime
) -> None:
    body = webhook("ready_to_confirm")
    body["session"]["updated_at"] = stamp
    assert parse_webhook(body).updated_at == expected.timestamp()


@pytest.mark.parametrize(
    "stamp",
    [None, 1716775380, "", "yesterday", "2024-13-01T00:00:00Z", "2024-05-27T25:00:00Z"],
)
def test_a_missing_or_unreadable_clock_is_none(stamp: Any) -> None:
    body = webhook("ready_to_confirm")
    body["session"]["updated_at"] = stamp
    assert parse_webhook(body).updated_at is None
    del body["session"]["updated_at"]
    assert parse_webhook(body).updated_at is None


@pytest.mark.parametrize(
    ("kind", "sent", "expected"),
    [
        ("ready_to_confirm", "confirm", "confirm"),
        ("ready_to_capture", "capture", "capture"),
        ("ready_to_confirm", None, "confirm"),  # what the type means, when the payload is silent
        ("ready_to_capture", None, "capture"),
        ("action_required", None, None),
        ("payment_finished", None, None),
        ("ready_to_capture", "CAPTURE", "capture"),  # not one of the provider's words
        ("action_required", "confirm", "confirm"),
        ("action_required", "refund", None),
        ("action_required", ["confirm"], None),
    ],
)
def test_next_action(kind: str, sent: Any, expected: str | None) -> None:
    body = webhook(kind)
    if sent is not None:
        body["session"]["next_action"] = sent
    assert parse_webhook(body).next_action == expected


def test_interaction_is_the_newest_payments() -> None:
    body = webhook("action_required", interaction=redirect())
    items = body["session"]["acquiring_payments"]
    items.append(payment(interaction=inform()))
    items.append(payment())  # a newer payment with no interaction does not hide the one before
    assert parse_webhook(body).interaction == inform()


# -- field_text -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("sdfew^//asdhbv", "sdfew^//asdhbv"),
        ("", ""),
        (" padded \r\n", " padded \r\n"),
        ("été ₽ 支付", "été ₽ 支付"),
        ("null", "null"),
        (0, "0"),
        (15000, "15000"),
        (-3, "-3"),
        (10**20, "100000000000000000000"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (None, ""),
        ({}, "{}"),
        ({"b": 1, "a": [1, 2]}, '{"b":1,"a":[1,2]}'),
        ({"name": "été", "quote": '"'}, '{"name":"été","quote":"\\""}'),
        ([1, "two", None], '[1,"two",null]'),
        ([], "[]"),
    ],
)
def test_field_text(value: Any, text: str) -> None:
    assert field_text(value) == text


# -- the text shortcut ----------------------------------------------------------------------------

_awkward_text = st.text(
    st.sampled_from(
        ["a", "\x00", "\ud800", "\udbff", "\udc00", "\udfff", "\U0001f600", "\\", "u", "é"]
    ),
    max_size=6,
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _awkward_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_awkward_text, inner, max_size=3),
    max_leaves=30,
)


def _outcome(document: Any, raw: bytes | None) -> str:
    try:
        return repr(parse_webhook(document, raw))
    except MalformedWebhookError as error:
        return f"refused: {error}"


@settings(max_examples=300)
@example(extra="a", depth=62, full=False, ascii_only=True, upper=False, encoding="utf-8")
@example(extra="a", depth=63, full=False, ascii_only=True, upper=False, encoding="utf-8")
@example(extra="\udfff", depth=0, full=True, ascii_only=True, upper=True, encoding="utf-8")
@example(extra="\ud800", depth=0, full=True, ascii_only=False, upper=False, encoding="utf-8")
@example(extra="\ud800", depth=0, full=True, ascii_only=True, upper=False, encoding="utf-16")
@given(
    extra=_values,
    depth=st.integers(0, 70),
    full=st.booleans(),
    ascii_only=st.booleans(),
    upper=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-be", "utf-32-le"]),
)
def test_reading_the_raw_text_decides_as_walking_the_document(
    extra: Any, depth: int, full: bool, ascii_only: bool, upper: bool, encoding: str
) -> None:
    """Depth 62 is 64 brackets, read from the text; 63 is 65, walked. ``"\\uDFFF"``
    escapes in capitals; a surrogate written raw (Python's parser reads it); UTF-16."""
    document = webhook("action_required") if full else {"type": "t", "session": {"id": "ps_1"}}
    nested: Any = extra
    for _ in range(depth):
        nested = [nested]
    document["session"]["extra"] = nested
    text = json.dumps(document, ensure_ascii=ascii_only)
    if upper:
        text = re.sub(r"\\u[0-9a-f]{4}", lambda m: m[0][:2] + m[0][2:].upper(), text)
    try:
        raw = text.encode(encoding, "surrogatepass")
        decoded = json.loads(raw)  # escaped pairs of surrogates decode to one character
    except (UnicodeError, ValueError):  # not text the parser reads: refused before parsing
        return
    assert _outcome(decoded, raw) == _outcome(decoded, None)


@pytest.mark.parametrize("odd", ["\x85", "\xa0", "\u2028", "\u3000", "\ufeff", "é", "/", "."])
def test_the_documented_session_id_pattern_agrees_with_the_check(odd: str) -> None:
    """/openapi.json's pattern is read by ECMAScript rules, whose white space differs from
    Python's: both must take and refuse the same ids."""
    import jsonschema_rs

    from app.provider import SESSION_ID_PATTERN, is_session_id

    schema = jsonschema_rs.validator_for({"type": "string", "pattern": SESSION_ID_PATTERN})
    for candidate in (f"ps{odd}1", odd, f"{odd}{odd}"):
        assert schema.is_valid(candidate) is is_session_id(candidate), repr(candidate)
