"""Every order of webhooks Smart Glocal's guides document, replayed through HTTP on both engines.

After each step the test looks at what the customer sees (``/pay/{token}`` as a page and inside
the partner's iframe, ``/api/v1/status/{token}``) and what the partner's session answer says.
The late variant then re-delivers every webhook sent so far, each serialised anew (so not a byte
duplicate), as the provider's retries would: that must change nothing anyone sees.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from standardwebhooks import Webhook

from .conftest import RELAY_SECRET, Configured, Deployment, FakeClock, read_twice
from .partner import Partner, recording_partner
from .payloads import redirect, webhook

SESSION = "ps_3230"
RETURN_URL = "https://shop.test/orders/7?step=paid"
PAY_PAGE = "https://bridge.test/pay/"
ACTION_TIMEOUT = 3600  # the default window, counted from the bridge's receipt of the action


# -- what happens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """A webhook the provider sends: its type and the fields :func:`payloads.webhook` takes."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackFromBank:
    """The customer's browser comes back from the bank, posting what the bank gave it."""

    form: dict[str, str]


def ready_to_confirm(next_action: str | None = "confirm") -> Hook:
    """``next_action=None``: a payload that leaves it out (the type itself says confirm)."""
    return Hook("ready_to_confirm", {"next_action": next_action})


def ready_to_capture(next_action: str | None = "capture") -> Hook:
    return Hook("ready_to_capture", {"next_action": next_action})


def action_required(interaction: dict[str, Any]) -> Hook:
    return Hook("action_required", {"interaction": interaction})


PAID = Hook("payment_finished", {"session_status": "accepted", "payment_status": "succeeded"})
CANCELED = Hook("payment_finished", {"session_status": "cancelled", "payment_status": "failed"})


def declined(code: str) -> Hook:
    return Hook(
        "payment_finished",
        {"session_status": "in_progress", "payment_status": "failed", "error_code": code},
    )


BACK_3DS1 = BackFromBank({"PaRes": "eJzLSM3JyVcozy/KSQEAGgQEXQ==", "MD": "abc75daefnn"})
BACK_3DS2 = BackFromBank({"cres": "eyJ0cmFuc1N0YXR1cyI6IlkifQ"})

# The bank steps, as the provider sends them.
CREQ = "eyJtZXNzYWdlVHlwZSI6IkNSZXEiLCJtZXNzYWdlVmVyc2lvbiI6IjIuMi4wIn0"
THREE_DS_1 = redirect()  # the documented example: POST PaReq and MD to url (base_url plus qs)
THREE_DS_2 = redirect(
    url="https://acs.bank.test/3ds2/challenge",
    base_url="https://acs.bank.test/3ds2/challenge",
    qs={},
    params={"creq": CREQ, "threeDSSessionData": "c2Vzc2lvbi0zMjMw"},
)
BASE_URL_ONLY = redirect(  # no url: base_url with qs is where the form goes
    url=None,
    base_url="https://acs.bank.test/pareq",
    qs={"order": "9", "lang": "en"},
    params={"PaReq": "eJzVWNmu+/2", "MD": "9-3230"},
)
BY_GET = redirect(
    method="GET",
    url="https://acs.bank.test/cit?order=77",
    base_url="https://acs.bank.test/cit",
    qs={"order": "77"},
    params={"creq": CREQ},
)
SECOND_CHALLENGE = redirect(
    url="https://acs2.bank.test/challenge/v2",
    base_url="https://acs2.bank.test/challenge/v2",
    qs={},
    params={"creq": "c2Vjb25kIGNoYWxsZW5nZQ", "threeDSSessionData": "c2Vzc2lvbi0zMjMw"},
)
# Steps the bridge cannot show: the customer finishes them in another app or page.
SBER_PAY = {"type": "inform", "inform": {"notification": {"type": "sber_pay_widget", "id": "7"}}}
UNKNOWN_TYPE = {"type": "app_confirmation", "app_confirmation": {"deeplink": "bank://confirm/7"}}
TDS_DATA_ONLY = {
    "type": "redirect",
    "redirect": {"method": "POST", "tds_data": {"acs_transaction_id": "8a880dc0", "v": "2.2.0"}},
}


# -- what the customer sees -----------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    heading: str
    form: tuple[str, tuple[tuple[str, str], ...]] | None = None  # POST: the action, the fields
    link: str | None = None  # GET: where the browser is sent
    outcome: bool = False  # the customer's part is over: on to the return URL


def waiting(heading: str) -> Page:
    return Page(heading)


def outcome(heading: str) -> Page:
    return Page(heading, outcome=True)


def bank_form(action: str, **fields: str) -> Page:
    return Page("Going to your bank", form=(action, tuple(fields.items())))


def bank_link(url: str) -> Page:
    return Page("Going to your bank", link=url)


PREPARING = waiting("Preparing your payment")
CONFIRMING = waiting("Confirming your payment")
CHECKING = waiting("Checking the result")
ELSEWHERE = waiting("Finish the payment with your bank")
APPROVED = outcome("Payment approved")
COMPLETE = outcome("Payment complete")
CANCELED_PAGE = outcome("Payment canceled")
NOT_APPROVED = outcome("Payment not approved")

THREE_DS_1_FORM = bank_form(
    "https://acs.bank.test/challenge?foo=bar", PaReq="sdfew^//asdhbv", MD="abc75daefnn"
)
THREE_DS_2_FORM = bank_form(
    "https://acs.bank.test/3ds2/challenge", creq=CREQ, threeDSSessionData="c2Vzc2lvbi0zMjMw"
)


@dataclass(frozen=True)
class Sees:
    """After a step: the bridge's status, the customer's page, and what the partner is told."""

    status: str
    page: Page
    next_action: str | None = None
    action: str | None = None  # the interaction type the partner is offered the bridge's page for
    reason: str | None = None


NOTHING_YET = Sees("pending", PREPARING)
Step = tuple[Hook | BackFromBank, Sees]


@dataclass(frozen=True)
class Flow:
    name: str
    api: str  # "v1": acquiring_payments (payouts: payments); "v2": payment_list (payout_list)
    steps: tuple[Step, ...]
    payout: bool = False


def flow(name: str, api: str, *steps: Step, payout: bool = False) -> Flow:
    return Flow(name, api, steps, payout)


# -- the flows ------------------------------------------------------------------------------------

FLOWS = [
    flow(
        "one-time-confirm-first",
        "v1",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (action_required(THREE_DS_1), Sees("action_required", THREE_DS_1_FORM, action="redirect")),
        (BACK_3DS1, Sees("action_required", CHECKING, action="redirect")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "automatic-confirmation",
        "v2",
        (
            action_required(BASE_URL_ONLY),
            Sees(
                "action_required",
                bank_form(
                    "https://acs.bank.test/pareq?order=9&lang=en", PaReq="eJzVWNmu+/2", MD="9-3230"
                ),
                action="redirect",
            ),
        ),
        (BACK_3DS1, Sees("action_required", CHECKING, action="redirect")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "automatic-confirmation-without-3ds",
        "v1",
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "widget",
        "v2",
        (action_required(THREE_DS_2), Sees("action_required", THREE_DS_2_FORM, action="redirect")),
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "recurring-cit",
        "v1",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (
            action_required(BY_GET),
            Sees(
                "action_required",
                bank_link(f"https://acs.bank.test/cit?order=77&creq={CREQ}"),
                action="redirect",
            ),
        ),
        (BACK_3DS2, Sees("action_required", CHECKING, action="redirect")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "recurring-mit-no-3ds",
        "v2",
        (ready_to_confirm(next_action=None), Sees("in_progress", CONFIRMING, "confirm")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "one-time-declined-by-the-bank",
        "v2",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (action_required(THREE_DS_2), Sees("action_required", THREE_DS_2_FORM, action="redirect")),
        (BACK_3DS2, Sees("action_required", CHECKING, action="redirect")),
        (
            declined("insufficient_funds"),
            Sees("failed", NOT_APPROVED, reason="insufficient_funds"),
        ),
    ),
    flow(
        "two-stage-3ds-capture",
        "v1",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (action_required(THREE_DS_1), Sees("action_required", THREE_DS_1_FORM, action="redirect")),
        (BACK_3DS1, Sees("action_required", CHECKING, action="redirect")),
        (ready_to_capture(), Sees("authorized", APPROVED, "capture")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "two-stage-3ds-cancel",
        "v2",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (action_required(THREE_DS_2), Sees("action_required", THREE_DS_2_FORM, action="redirect")),
        (BACK_3DS2, Sees("action_required", CHECKING, action="redirect")),
        (ready_to_capture(next_action=None), Sees("authorized", APPROVED, "capture")),
        (CANCELED, Sees("canceled", CANCELED_PAGE)),
    ),
    flow(
        "two-stage-no-3ds-capture",
        "v2",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (ready_to_capture(), Sees("authorized", APPROVED, "capture")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "two-stage-no-3ds-cancel",
        "v1",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (ready_to_capture(), Sees("authorized", APPROVED, "capture")),
        (CANCELED, Sees("canceled", CANCELED_PAGE)),
    ),
    flow(
        "card-payout-v1",
        "v1",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (PAID, Sees("succeeded", COMPLETE)),
        payout=True,
    ),
    flow(
        "card-payout-v2",
        "v2",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (PAID, Sees("succeeded", COMPLETE)),
        payout=True,
    ),
    flow(
        "card-payout-declined",
        "v2",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (declined("card_blocked"), Sees("failed", NOT_APPROVED, reason="card_blocked")),
        payout=True,
    ),
    flow(
        "second-action-required-replaces-the-first",
        "v1",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (action_required(THREE_DS_1), Sees("action_required", THREE_DS_1_FORM, action="redirect")),
        (BACK_3DS1, Sees("action_required", CHECKING, action="redirect")),
        (
            action_required(SECOND_CHALLENGE),
            Sees(
                "action_required",
                bank_form(
                    "https://acs2.bank.test/challenge/v2",
                    creq="c2Vjb25kIGNoYWxsZW5nZQ",
                    threeDSSessionData="c2Vzc2lvbi0zMjMw",
                ),
                action="redirect",
            ),
        ),
        (BACK_3DS2, Sees("action_required", CHECKING, action="redirect")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "elsewhere-inform-notification",
        "v2",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (action_required(SBER_PAY), Sees("action_required", ELSEWHERE, action="inform")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "elsewhere-unknown-interaction",
        "v1",
        (
            action_required(UNKNOWN_TYPE),
            Sees("action_required", ELSEWHERE, action="app_confirmation"),
        ),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
    flow(
        "elsewhere-tds-data-without-url",
        "v1",
        (ready_to_confirm(), Sees("in_progress", CONFIRMING, "confirm")),
        (action_required(TDS_DATA_ONLY), Sees("action_required", ELSEWHERE, action="redirect")),
        (ready_to_capture(), Sees("authorized", APPROVED, "capture")),
        (PAID, Sees("succeeded", COMPLETE)),
    ),
]


CASES = [pytest.param(flow, id=flow.name) for flow in FLOWS]


@pytest.fixture
def partner_backend() -> Iterator[Partner]:
    with recording_partner() as backend:
        yield backend


@pytest.mark.parametrize("late", [False, True], ids=["in-order", "late-redeliveries"])
@pytest.mark.parametrize("flow", CASES)
async def test_flow(
    configured: Configured, clock: FakeClock, flow: Flow, late: bool, partner_backend: Partner
) -> None:
    """Besides what everyone sees, the partner's backend gets every webhook and the bridge's own
    events, each verified with the Standard Webhooks library: one ``session.updated`` per
    change of the status, reason or next action it reads, in order, with those values, and
    none for a late copy that changes nothing."""
    relay = {"RELAY_URL": partner_backend.url, "RELAY_EVENTS": "provider bridge"}
    async with configured(RETURN_URL=RETURN_URL, **relay) as bridge:
        journey = Journey(bridge, clock, flow)
        await journey.start()
        journey.expect(await journey.observe(), NOTHING_YET)
        read = [("pending", None, None)]
        for event, sees in flow.steps:
            await journey.perform(event)
            journey.expect(seen := await journey.observe(), sees)
            if late:
                clock.advance(1)  # so that a re-delivery applied anew would show in the times
                before = await journey.observe()
                await journey.redeliver_everything_sent()
                after = await journey.observe()
                assert after == before
                journey.expect(after, sees)
            now = (seen.session["status"], seen.session["reason"], seen.session["next_action"])
            if now != read[-1]:
                read.append(now)
        sent = len(journey.sent) + journey.redeliveries  # each accepted, so each relayed
        await partner_backend.arrived(sent + len(read) - 1)
        await asyncio.sleep(0.1)  # nothing more comes
    # Every message verifies with the partner's Standard Webhooks library; the provider's
    # carry its signature too, the bridge's do not.
    messages = [
        Webhook(RELAY_SECRET).verify(item.body, item.headers) for item in partner_backend.received
    ]
    assert len(messages) == sent + len(read) - 1
    ours = [item for item in partner_backend.received if "x-partner-sign" not in item.headers]
    events = [json.loads(item.body) for item in ours]
    assert [event["type"] for event in events] == ["session.updated"] * (len(read) - 1)
    told = [
        (event["data"]["status"], event["data"]["reason"], event["data"]["next_action"])
        for event in events
    ]
    assert told == read[1:]
    assert {event["data"]["session_id"] for event in events} == {SESSION}


# -- the journey ----------------------------------------------------------------------------------


@dataclass
class View:
    """``/pay/{token}`` as a browser reads it."""

    code: int
    location: str | None
    form_action: str
    heading: str
    forms: list[dict[str, str]]
    fields: list[tuple[str, str]]
    links: list[str]  # every href that leaves the bridge
    settings: dict[str, Any] | None  # the page script's settings
    refresh: bool  # moves on by itself without JavaScript
    html: str = field(compare=False)


@dataclass
class Observed:
    page: View  # as a top-level page
    framed: View  # inside the partner's iframe: an outcome is shown, not left for the shop
    status: dict[str, Any]  # the status answer
    session: dict[str, Any]  # the partner's session answer


class Journey:
    """One session's flow: the provider sends, the customer looks and comes back, the partner
    reads. Keeps what a step should leave behind that the table does not spell out: the
    payments of the newest webhook, when the current action's window started."""

    def __init__(self, bridge: Deployment, clock: FakeClock, flow: Flow) -> None:
        self.bridge = bridge
        self.clock = clock
        self.flow = flow
        self.token = ""
        self.sent: list[dict[str, Any]] = []
        self.payments: list[tuple[str, str]] = []
        self.window_from: float | None = None
        self.redeliveries = 0

    async def start(self) -> None:
        self.token = await self.bridge.partner.token(SESSION)

    async def perform(self, event: Hook | BackFromBank) -> None:
        self.clock.advance(5)
        if isinstance(event, BackFromBank):
            back = await self.bridge.client.post(f"/pay/{self.token}/return", form=event.form)
            assert back.status_code == 200
            return
        payload = self.payload(event)
        answer = await self.bridge.provider.send(json.dumps(payload).encode())
        assert await answer.get_json() == {"status": "accepted"}
        self.sent.append(payload)
        self.payments = payments_in(payload)
        if event.kind == "action_required":
            self.window_from = self.clock.now

    def payload(self, hook: Hook) -> dict[str, Any]:
        """The webhook as the provider sends it now: its clock a moment behind the bridge's, so
        strictly increasing along the flow."""
        fields = {name: value for name, value in hook.fields.items() if value is not None}
        updated_at = datetime.fromtimestamp(self.clock.now - 0.4, UTC)
        body = webhook(
            hook.kind,
            SESSION,
            api=self.flow.api,
            updated_at=updated_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            **fields,
        )
        return as_payout(body) if self.flow.payout else body

    async def redeliver_everything_sent(self) -> None:
        for payload in self.sent:
            self.redeliveries += 1
            body = reserialised(payload, self.redeliveries)
            answer = await self.bridge.provider.send(body)
            assert await answer.get_json() == {"status": "accepted"}  # not a byte duplicate

    async def observe(self) -> Observed:
        client, pay = self.bridge.client, f"/pay/{self.token}"
        status = await read_twice(client, f"/api/v1/status/{self.token}")
        session = await self.bridge.partner.session(SESSION)
        assert (status.status_code, session.status_code) == (200, 200)
        return Observed(
            page=await view(await read_twice(client, pay)),
            framed=await view(await read_twice(client, pay, headers={"Sec-Fetch-Dest": "iframe"})),
            status=await status.get_json(),
            session=await session.get_json(),
        )

    def expect(self, seen: Observed, sees: Sees) -> None:
        pending = sees.status == "action_required"
        expires = iso(self.window_from + ACTION_TIMEOUT) if pending and self.window_from else None
        assert seen.status == {
            "status": sees.status,
            "reason": sees.reason,
            "action_url": PAY_PAGE + self.token if pending else None,
            "updated_at": seen.status["updated_at"],
            "done": sees.page.outcome,
        }
        partner = seen.session
        assert (partner["status"], partner["reason"]) == (sees.status, sees.reason)
        assert partner["next_action"] == sees.next_action
        assert partner["expires_at"] == expires
        if sees.action is None:
            assert partner["action"] is None
        else:
            assert partner["action"]["type"] == sees.action
            assert partner["action"]["url"].startswith(PAY_PAGE)  # the bridge's page, not the bank
            assert partner["action"]["expires_at"] == expires
        assert [(payment["id"], payment["status"]) for payment in partner["payments"]] == (
            self.payments
        )
        self.expect_page(seen, sees)

    def expect_page(self, seen: Observed, sees: Sees) -> None:
        expected, page = sees.page, seen.page
        if expected.outcome:
            assert page.code == 303  # on to the partner's return URL
            assert page.location is not None and onward(page.location) == onward_to(sees.status)
            page = seen.framed
            assert [onward(link) for link in page.links] == [onward_to(sees.status)]
        else:
            assert seen.framed == page  # nothing differs in a frame until the outcome
        assert page.code == 200
        assert page.heading == expected.heading
        assert page.settings is not None
        assert (page.settings["status"], page.settings["done"]) == (sees.status, expected.outcome)
        if expected.form is not None:
            action, fields = expected.form
            assert page.forms == [{"id": "bank-form", "method": "post", "action": action}]
            assert page.fields == list(fields)
            assert page.links == []
        elif expected.link is not None:
            assert (page.forms, page.fields) == ([], [])
            assert set(page.links) == {expected.link}
        else:
            assert (page.forms, page.fields) == ([], [])
            assert "bank.test" not in page.html  # no old bank step lingers anywhere
            assert page.refresh is not expected.outcome  # a waiting page moves on by itself
        if expected.form is not None or expected.link is not None:
            bank = urlsplit(expected.form[0] if expected.form else expected.link or "")
            assert f"{bank.scheme}://{bank.hostname}" in page.form_action.split()


# -- helpers --------------------------------------------------------------------------------------


class _Reader(HTMLParser):
    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.heading = ""
        self.forms: list[dict[str, str]] = []
        self.fields: list[tuple[str, str]] = []
        self.links: list[str] = []
        self.refresh = False
        self._in_heading = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "h1":
            self._in_heading = True
        elif tag == "form" and attributes.get("class") != "way-out":  # the cancel form apart
            self.forms.append(attributes)
        elif tag == "input":
            self.fields.append((attributes["name"], attributes["value"]))
        elif tag == "meta" and attributes.get("http-equiv") == "refresh":
            self.refresh = True
        link = attributes.get("href") or attributes.get("src") or ""
        if link and not link.startswith(("/", "data:")):
            self.links.append(link)

    def handle_endtag(self, tag: str) -> None:
        if tag == "h1":
            self._in_heading = False

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self.heading += data


async def view(response: Any) -> View:
    html = await response.get_data(as_text=True)
    page = _Reader(html)
    settings = re.search(r'<script type="application/json" id="bridge-page">(.*?)</script>', html)
    policy = dict(
        part.split(" ", 1) for part in response.headers["Content-Security-Policy"].split("; ")
    )
    return View(
        code=response.status_code,
        location=response.headers.get("Location"),
        form_action=policy.get("form-action", ""),
        heading=page.heading.strip(),
        forms=page.forms,
        fields=page.fields,
        links=page.links,
        settings=json.loads(settings[1]) if settings else None,
        refresh=page.refresh,
        html=html,
    )


def onward(url: str) -> tuple[str, dict[str, str]]:
    """Where a customer is sent on, and the query it carries (``ts`` and ``sig``, which the
    bridge adds and which change with the time, left out)."""
    parts = urlsplit(url)
    query = {name: value for name, value in parse_qsl(parts.query) if name not in ("ts", "sig")}
    return parts._replace(query="").geturl(), query


def onward_to(status: str) -> tuple[str, dict[str, str]]:
    return onward(f"{RETURN_URL}&session_id={SESSION}&status={status}")


def payments_in(payload: dict[str, Any]) -> list[tuple[str, str]]:
    session = payload["session"]
    for name in ("acquiring_payments", "payment_list", "payments", "payout_list"):
        if name in session:
            return [(item["id"], item["status"]) for item in session[name]]
    return []


def as_payout(body: dict[str, Any]) -> dict[str, Any]:
    """A card payout's webhook: ``payments`` (v1) or ``payout_list`` (v2) of ``po_`` items."""
    session = body["session"]
    v1 = "acquiring_payments" in session
    items = session.pop("acquiring_payments" if v1 else "payment_list")
    session["payments" if v1 else "payout_list"] = [payout(item) for item in items]
    return body


def payout(payment: dict[str, Any]) -> dict[str, Any]:
    """A payment item made a payout to the same card: its status, amount and error kept."""
    item = {
        name: value
        for name, value in payment.items()
        if name not in ("customer", "payment_details", "transaction_info")
    }
    item["id"] = "po_7710"
    item["recipient"] = {"reference": "user@sg.com"}
    item["payout_details"] = {"type": "card", "card": {"brand": "visa", "last4": "8801"}}
    return item


def reserialised(payload: dict[str, Any], attempt: int) -> bytes:
    """The same webhook as the provider might send it again: keys in the opposite order and
    other white space for every attempt, so never the same bytes twice."""
    return json.dumps(_keys_reversed(payload), indent=attempt).encode()


def _keys_reversed(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _keys_reversed(value[name]) for name in reversed(value)}
    if isinstance(value, list):
        return [_keys_reversed(item) for item in value]
    return value


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
