from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks import Webhook, WebhookVerificationError

from app import demo as demo_module
from app import events
from app.config import check_strength
from app.demo import DemoError, serve_demo
from app.demo.shop import Credentials, Site, check_return, create_shop
from app.demo.simulated_provider import Provider, Stage
from app.lifecycle import Session, Status
from app.provider import NextAction, instant, parse_webhook
from app.returns import onward_url

from .conftest import RELAY_SECRET
from .test_return import readme_check

if TYPE_CHECKING:
    from quart import Quart
    from quart.typing import TestClientProtocol

PROVIDER_CLOCK = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _fetch(
    url: str, form: list[tuple[str, str]] | None, method: str, headers: Mapping[str, str]
) -> Answer:
    data = None if form is None else urlencode(form).encode()
    if method == "GET" and data is not None:
        url, data = f"{url}{'&' if '?' in url else '?'}{data.decode()}", None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers))
    try:
        with _opener.open(request, timeout=10) as response:
            return Answer(response.status, _headers(response.headers), response.read().decode())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, _headers(error.headers), error.read().decode())


def _headers(message: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in message.items()}


async def fetch(
    url: str,
    form: list[tuple[str, str]] | None = None,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> Answer:
    return await asyncio.to_thread(_fetch, url, form, method, headers or {})


def _free_ports() -> tuple[int, int]:
    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        second.bind(("127.0.0.1", 0))
        return first.getsockname()[1], second.getsockname()[1]


@dataclass(frozen=True)
class Demo:
    bridge: str
    shop: str


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    bridge_port, shop_port = _free_ports()
    ready = asyncio.Event()
    task = asyncio.create_task(serve_demo("127.0.0.1", bridge_port, shop_port, ready))
    started = asyncio.create_task(ready.wait())
    await asyncio.wait({task, started}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if task.done():
        task.result()
    assert ready.is_set(), "the demo did not start"
    yield Demo(f"http://127.0.0.1:{bridge_port}", f"http://127.0.0.1:{shop_port}")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class StatusWatch:
    """The customer's status as the checkout page follows it: each change, as it happens."""

    def __init__(self, demo: Demo, token: str) -> None:
        self.url = f"{demo.bridge}/api/v1/status/{token}"
        self.etag: str | None = None
        self.status: str | None = None

    async def next(self) -> str:
        """The next status that differs from the last one seen (the first one at once)."""
        for _ in range(20):
            if self.etag is None:
                answer = await fetch(self.url)
            else:
                answer = await fetch(f"{self.url}?wait=1", headers={"If-None-Match": self.etag})
            if answer.status == 304:
                continue
            assert answer.status == 200, answer
            self.etag = answer.headers["etag"]
            status = json.loads(answer.text)["status"]
            if status != self.status:
                self.status = status
                return str(status)
        raise AssertionError(f"the status stayed {self.status}")


def bank_form(page: str) -> tuple[str, str, list[tuple[str, str]]]:
    """The bridge's bank step, read the way a browser would: a form (POST) or a link (GET)."""
    link = re.search(r'<a id="bank-go" href="([^"]+)"', page)
    if link is not None:
        return "GET", html.unescape(link[1]), []
    form = re.search(r'<form id="bank-form" method="(\w+)" action="([^"]+)"', page)
    assert form is not None, page
    fields = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page)
    pairs = [(html.unescape(name), html.unescape(value)) for name, value in fields]
    return form[1].upper(), html.unescape(form[2]), pairs


def history(result_page: str) -> list[str]:
    """The steps the shop's result page lists, in order; their provider times increase."""
    steps = re.findall(r'<li data-event="(\w+)"><code><time datetime="([^"]+)"', result_page)
    times = [time for _, time in steps]
    assert all(PROVIDER_CLOCK.match(time) for time in times), times
    assert times == sorted(set(times)), times
    return [name for name, _ in steps]


def heading(page: str) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page)
    assert match is not None, page
    return match[1]


@dataclass(frozen=True)
class Row:
    """One event the shop's backend received from the bridge, as its panel shows it."""

    type: str
    session: str
    status: str
    next_action: str
    delivery: str
    attempt: str
    repeat: str
    done: str


ROW = re.compile(
    r'<tr data-type="([^"]*)" data-session="([^"]*)" data-status="([^"]*)"'
    r' data-next-action="([^"]*)" data-delivery="([^"]*)"'
    r' data-attempt="([^"]*)" data-repeat="(\w+)">.*?<td class="done">(.*?)</td>',
    re.DOTALL,
)


def received(page: str) -> list[Row]:
    """The rows of the partner's panel (``/partner``, or a result page's), in order."""
    text = html.unescape
    return [
        Row(
            text(kind),
            text(session),
            text(status),
            text(action),
            text(delivery),
            attempt,
            repeat,
            text(_text(done)),
        )
        for kind, session, status, action, delivery, attempt, repeat, done in ROW.findall(page)
    ]


def _text(fragment: str) -> str:
    return re.sub(r"<[^>]+>", "", fragment).strip()


def verified(result_page: str) -> bool:
    match = re.search(r'id="return-check" data-verified="(yes|no)"', result_page)
    assert match is not None, result_page
    return match[1] == "yes"


PAID, NOT_PAID = "order paid: fulfilled", "order not paid: closed"
DONE = {  # what the shop's backend does for an event: by its next_action, else its status
    "confirm": "called session/confirm",
    "action_required": "nothing to do (the bridge shows the customer the bank)",
    "capture": "called session/capture",
    "succeeded": PAID,
    "failed": NOT_PAID,
}
REPEAT = "seen before: answered 200, not acted on again"


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every Standard Webhooks check the shop's backend made, and whether it passed."""
    answers: list[bool] = []
    real = Webhook.verify

    def spy(self: Webhook, data: bytes, headers: dict[str, str], **options: Any) -> Any:
        try:
            event = real(self, data, headers, **options)
        except WebhookVerificationError:
            answers.append(False)
            raise
        answers.append(True)
        return event

    monkeypatch.setattr(Webhook, "verify", spy)
    return answers


async def back_at_the_shop(demo: Demo, pay_url: str, session_id: str, status: str) -> str:
    """The bridge's page sends the customer to the shop's result page with the signed
    outcome, which the shop verifies; the location is returned."""
    onward = await fetch(pay_url)
    assert onward.status == 303, onward
    location = urlsplit(onward.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{demo.shop}/result"
    query = parse_qs(location.query)
    assert query["session_id"] == [session_id] and query["status"] == [status]
    assert set(query) == {"session_id", "status", "ts", "sig"}
    result = await fetch(onward.headers["location"])
    assert result.status == 200
    assert verified(result.text)
    assert f'id="came-back-with">{status}<' in result.text
    return onward.headers["location"]


async def settled(url: str) -> Answer:
    """The result page once it stops refreshing: the bridge's status is final and the shop's
    backend acted on the bridge's event that said so."""
    for _ in range(100):
        result = await fetch(url)
        if '<meta http-equiv="refresh"' not in result.text:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"the result page never settled: {result.text}")


CONFIRMED = ["ready_to_confirm", "confirm", "action_required"]
CONFIRM = ("in_progress", "confirm")  # the first change the bridge tells: confirm, please


@pytest.mark.parametrize(
    ("method", "stages", "decision", "statuses", "steps", "ending"),
    [
        ("post", "one", "approve", ["succeeded"], ["approved", "payment_finished"], "Paid"),
        (
            "get",
            "two",
            "approve",
            ["authorized", "succeeded"],
            ["approved", "ready_to_capture", "capture", "payment_finished"],
            "Paid",
        ),
        ("post", "two", "decline", ["failed"], ["declined", "payment_finished"], "Not paid"),
        ("get", "one", "decline", ["failed"], ["declined", "payment_finished"], "Not paid"),
    ],
)
async def test_the_whole_journey(
    demo: Demo,
    checked: list[bool],
    method: str,
    stages: str,
    decision: str,
    statuses: list[str],
    steps: list[str],
    ending: str,
) -> None:
    shop = await fetch(f"{demo.shop}/")
    assert shop.status == 200 and "Pay 150.00 USD" in shop.text
    assert 'name="stages" value="one" checked' in shop.text
    assert 'name="stages" value="two"' in shop.text
    # Beside the customer's side, the partner's: a page of its own that updates by itself.
    assert '<iframe class="partner-frame" src="/partner"' in shop.text
    panel = await fetch(f"{demo.shop}/partner")
    assert panel.status == 200 and "Nothing received yet." in panel.text
    assert '<meta http-equiv="refresh"' in panel.text and "<script" not in panel.text

    choice = [("method", method), ("stages", stages)]
    checkout = await fetch(f"{demo.shop}/checkout", choice, "POST")
    assert checkout.status == 303
    pay_url = checkout.headers["location"]
    assert pay_url.startswith(f"{demo.bridge}/pay/")
    watch = StatusWatch(demo, pay_url.rsplit("/", 1)[1])
    assert await watch.next() == "pending"
    assert heading((await fetch(pay_url)).text) == "Preparing your payment"

    # ready_to_confirm: the provider waits for the shop; no bank step yet.
    assert await watch.next() == "in_progress"
    confirming = await fetch(pay_url)
    assert heading(confirming.text) == "Confirming your payment"
    assert 'id="bank-form"' not in confirming.text and 'id="bank-go"' not in confirming.text

    # The shop heard ready_to_confirm from the relay and confirmed: now, and only now, the bank.
    assert await watch.next() == "action_required"
    page = await fetch(pay_url)
    form_method, action, fields = bank_form(page.text)
    assert form_method == method.upper() and action.startswith(f"{demo.shop}/acs")
    assert f"form-action 'self' {demo.shop} " in page.headers["content-security-policy"]
    bank = await fetch(action, fields, form_method)
    assert bank.status == 200
    assert "arrived exactly as the provider sent it" in bank.text, bank.text
    assert ("PaReq" in bank.text) is (method == "post")
    found = re.search(r"<code>(ps_demo_\w+)</code>", bank.text)
    assert found is not None
    session_id = found[1]
    so_far = await fetch(f"{demo.shop}/result?{urlencode({'session_id': session_id})}")
    assert history(so_far.text) == CONFIRMED
    assert '<meta http-equiv="refresh"' in so_far.text  # not final: the page updates itself
    assert not verified(so_far.text)  # no signed return: nothing claimed, nothing believed
    first = received(so_far.text)[0]
    assert (first.type, first.status, first.next_action) == ("session.updated", *CONFIRM)

    answered = await fetch(
        f"{demo.shop}/provider/return", [("session", session_id), ("decision", decision)], "POST"
    )
    assert answered.status == 303
    assert answered.headers["location"] == f"{pay_url}/return"
    back = await fetch(f"{pay_url}/return")
    assert back.status == 200 and "Checking the result" in back.text

    for status in statuses:
        assert await watch.next() == status
        location = await back_at_the_shop(demo, pay_url, session_id, status)
    result = await settled(location)
    assert heading(result.text) == ending
    assert 'id="bridge-status">' + statuses[-1] + "<" in result.text
    assert verified(result.text)
    assert history(result.text) == CONFIRMED + steps

    # The partner's side: the bridge told the shop's backend of every change, each once, in
    # order, each signature good (no provider payload), and the shop did what each asks.
    changes = [CONFIRM, ("action_required", "")]
    changes += [(status, "capture" if status == "authorized" else "") for status in statuses]
    rows = received((await fetch(f"{demo.shop}/partner")).text)
    assert [(row.type, row.status, row.next_action) for row in rows] == [
        ("session.updated", *change) for change in changes
    ]
    assert {row.session for row in rows} == {session_id}
    assert all(row.attempt == "1" and row.repeat == "no" for row in rows), rows
    deliveries = [row.delivery for row in rows]
    assert len(set(deliveries)) == len(deliveries), deliveries
    assert all(delivery.startswith("msg_") for delivery in deliveries), deliveries
    assert [row.done for row in rows] == [DONE[action or status] for status, action in changes]
    assert rows[-1].done == (PAID if ending == "Paid" else NOT_PAID)
    assert checked == [True] * len(rows)
    assert received(result.text) == rows  # the result page shows this session's part

    # A return changed on the way is not believed: the shop asks the bridge instead.
    other = "failed" if statuses[-1] != "failed" else "succeeded"
    tampered = location.replace(f"status={statuses[-1]}", f"status={other}")
    unsigned = location.split("&sig=")[0]
    for url in (tampered, unsigned):
        shown = await fetch(url)
        assert shown.status == 200 and not verified(shown.text)
        assert 'id="came-back-with"' not in shown.text
        assert heading(shown.text) == ending
    assert f'id="claimed">{other}<' in (await fetch(tampered)).text

    forged = {"session_id": session_id, "status": '<b id="x">succeeded</b>'}
    shown = await fetch(f"{demo.shop}/result?{urlencode(forged)}")
    assert not verified(shown.text)
    assert "&lt;b id=&#34;x&#34;&gt;succeeded&lt;/b&gt;" in shown.text and "<b " not in shown.text
    assert 'id="bridge-status">' + statuses[-1] + "<" in shown.text  # the bridge is asked


async def test_the_shop_refuses_what_it_does_not_know(demo: Demo) -> None:
    unknown = await fetch(f"{demo.shop}/result?session_id=ps_nobody&status=succeeded")
    assert unknown.status == 404
    assert (await fetch(f"{demo.shop}/acs?session=ps_nobody")).status == 404
    for form in ([("stages", "three")], [("method", "put")]):
        assert (await fetch(f"{demo.shop}/checkout", form, "POST")).status == 400


class RecordingProvider(Provider):
    """The simulated provider with its webhooks kept instead of sent."""

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        super().__init__(key, "http://127.0.0.1:9/unused", delay=0)
        self.sent: list[dict[str, Any]] = []
        self.calls: list[str] = []  # the partner's calls, refused ones too

    async def send(self, webhook: Mapping[str, Any]) -> None:
        self.sent.append(dict(webhook))

    def confirm(self, session_id: str) -> bool:
        self.calls.append("confirm")
        return super().confirm(session_id)

    def capture(self, session_id: str) -> bool:
        self.calls.append("capture")
        return super().capture(session_id)

    async def settled(self, session_id: str) -> Stage:
        for _ in range(100):
            if self.sessions[session_id].stage is not Stage.WORKING:
                return self.sessions[session_id].stage
            await asyncio.sleep(0)
        raise AssertionError("the provider never sent its webhook")


REDIRECT = {
    "url": "https://acs.test/3ds?session=ps_1",
    "base_url": "https://acs.test/3ds",
    "method": "POST",
    "qs": {"session": "ps_1"},
    "params": {"PaReq": "eJzLSM3JyQcABiwCFQ==", "MD": "md-1"},
}


async def test_the_provider_waits_for_the_partner_before_each_step(
    provider_key: rsa.RSAPrivateKey,
) -> None:
    provider = RecordingProvider(provider_key)
    provider.start("ps_1", return_url="http://bridge.test/back", redirect=REDIRECT, two_stage=True)
    assert not provider.confirm("ps_1")  # nothing to confirm before ready_to_confirm is sent
    assert await provider.settled("ps_1") is Stage.CONFIRM
    assert not provider.capture("ps_1") and not provider.bank_answered("ps_1", approved=True)
    assert provider.confirm("ps_1")
    assert await provider.settled("ps_1") is Stage.BANK
    assert not provider.capture("ps_1") and not provider.confirm("ps_1")
    assert provider.bank_answered("ps_1", approved=True)
    assert await provider.settled("ps_1") is Stage.CAPTURE
    assert provider.capture("ps_1")
    assert await provider.settled("ps_1") is Stage.FINISHED
    await provider.stop()

    webhooks = [parse_webhook(json.loads(json.dumps(body))) for body in provider.sent]
    assert [(hook.type, hook.next_action) for hook in webhooks] == [
        ("ready_to_confirm", "confirm"),
        ("action_required", None),
        ("ready_to_capture", "capture"),
        ("payment_finished", None),
    ]
    assert [body["session"].get("next_action") for body in provider.sent] == [
        "confirm",
        None,
        "capture",
        None,
    ]
    assert webhooks[1].interaction == {"type": "redirect", "redirect": REDIRECT}
    assert webhooks[3].session_status == "accepted"
    assert webhooks[3].payments[0].status == "succeeded"
    times = [body["session"]["updated_at"] for body in provider.sent]
    assert all(PROVIDER_CLOCK.match(time) for time in times), times
    moments = [instant(time) or 0.0 for time in times]
    assert all(earlier < later for earlier, later in zip(moments, moments[1:], strict=False))


async def test_a_declined_two_stage_payment_finishes_failed_without_a_hold(
    provider_key: rsa.RSAPrivateKey,
) -> None:
    provider = RecordingProvider(provider_key)
    provider.start("ps_2", return_url="http://bridge.test/back", redirect=REDIRECT, two_stage=True)
    await provider.settled("ps_2")
    provider.confirm("ps_2")
    await provider.settled("ps_2")
    assert provider.bank_answered("ps_2", approved=False)
    assert await provider.settled("ps_2") is Stage.FINISHED
    assert not provider.bank_answered("ps_2", approved=True)  # one answer per bank step
    await provider.stop()

    last = parse_webhook(provider.sent[-1])
    assert [body["type"] for body in provider.sent] == [
        "ready_to_confirm",
        "action_required",
        "payment_finished",
    ]
    assert last.payments[0].status == "failed" and last.payments[0].error_code


def test_the_provider_clock_always_moves_on(provider_key: rsa.RSAPrivateKey) -> None:
    provider = Provider(provider_key, "http://127.0.0.1:9/unused")
    readings = [provider.tick() for _ in range(2000)]
    assert all(PROVIDER_CLOCK.match(reading) for reading in readings)
    assert readings == sorted(set(readings))  # same width, so text order is time order


async def test_a_busy_port_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DemoError, match=f"port {port} on 127.0.0.1 is already in use"):
            await serve_demo("127.0.0.1", port, _free_ports()[0])


async def test_the_demo_makes_secrets_serve_would_take(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing configured, and yet every secret the demo makes passes ``serve``'s checks, and
    nothing worries at start but the http:// bank pages it shows on purpose."""
    built: list[Quart] = []
    make = demo_module._bridge_app
    monkeypatch.setattr(
        demo_module, "_bridge_app", lambda *given: built.append(make(*given)) or built[-1]
    )
    ready = asyncio.Event()
    task = asyncio.create_task(serve_demo("127.0.0.1", *_free_ports(), ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    settings = built[0].extensions["bridge"].settings
    check_strength(settings)
    assert settings.return_url and settings.return_secret and settings.relay_url
    assert settings.relay_events == {"bridge"}  # the shop reads the bridge's events, no more
    assert [warning for warning in settings.warnings if "ALLOW_INSECURE_ACS" not in warning] == []


SECRET = "demo-return-secret-0123456789"


def session_updated(
    session_id: str, status: str, next_action: NextAction | None = None, reason: str | None = None
) -> bytes:
    """The bridge's ``session.updated`` for a session that just became ``status``, as
    :mod:`app.events` makes it."""
    now = time.time()
    after = Session(session_id, Status(status), now, now, reason=reason, next_action=next_action)
    event = events.session_updated(None, after)
    assert event is not None
    return event.body


@dataclass
class Partner:
    """The shop app alone, with a provider that keeps its webhooks: the test is the bridge."""

    client: TestClientProtocol
    provider: RecordingProvider

    async def relay(
        self,
        body: bytes,
        *,
        message_id: str,
        attempt: int = 1,
        signed: bytes | None = None,
        secret: str = RELAY_SECRET,
        at: datetime | None = None,
        changed: Mapping[str, str | None] | None = None,
    ) -> int:
        """POST a message to the shop as the bridge sends it: signed as Standard Webhooks
        specify, with the message id and attempt. To forge one: ``signed`` other bytes than
        sent, another ``secret``, a signature made ``at`` another time, or headers ``changed``
        after signing (``None`` leaves one out)."""
        moment = at or datetime.now(UTC)
        headers: dict[str, str] = {
            "Content-Type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, moment, signed or body),
            "X-Bridge-Delivery-Id": message_id,
            "X-Bridge-Attempt": str(attempt),
        }
        for name, value in (changed or {}).items():
            if value is None:
                del headers[name]
            else:
                headers[name] = value
        answer = await self.client.post("/partner/webhooks", data=body, headers=headers)
        await asyncio.sleep(0)  # the shop acts in the background
        return answer.status_code

    async def rows(self) -> list[Row]:
        return received(await (await self.client.get("/partner")).get_data(as_text=True))


@pytest.fixture
async def partner(provider_key: rsa.RSAPrivateKey) -> AsyncIterator[Partner]:
    provider = RecordingProvider(provider_key)
    nobody = _free_ports()[0]  # no bridge: the result page's read of the session fails fast
    credentials = Credentials("partner-key", SECRET, RELAY_SECRET)
    app = create_shop(Site("127.0.0.1", nobody, nobody), provider, credentials)
    async with app.test_app() as running:
        yield Partner(running.test_client(), provider)


async def waiting_for_confirm(provider: RecordingProvider, two_stage: bool = False) -> None:
    provider.start(
        "ps_demo_1", return_url="http://bridge.test/back", redirect=REDIRECT, two_stage=two_stage
    )
    assert await provider.settled("ps_demo_1") is Stage.CONFIRM


async def test_the_shop_confirms_and_captures_what_the_bridge_asks(partner: Partner) -> None:
    provider = partner.provider
    await waiting_for_confirm(provider, two_stage=True)
    told = [
        session_updated("ps_demo_1", "in_progress", "confirm"),
        session_updated("ps_demo_1", "action_required"),
        session_updated("ps_demo_1", "authorized", "capture"),
        session_updated("ps_demo_1", "succeeded"),
    ]
    assert await partner.relay(told[0], message_id="msg_1") == 200
    assert await provider.settled("ps_demo_1") is Stage.BANK
    assert await partner.relay(told[1], message_id="msg_2") == 200
    provider.bank_answered("ps_demo_1", approved=True)
    assert await provider.settled("ps_demo_1") is Stage.CAPTURE
    assert await partner.relay(told[2], message_id="msg_3") == 200
    assert await provider.settled("ps_demo_1") is Stage.FINISHED
    assert await partner.relay(told[3], message_id="msg_4") == 200
    assert provider.calls == ["confirm", "capture"]
    rows = await partner.rows()
    assert [(row.type, row.status, row.next_action, row.delivery, row.done) for row in rows] == [
        ("session.updated", "in_progress", "confirm", "msg_1", DONE["confirm"]),
        ("session.updated", "action_required", "", "msg_2", DONE["action_required"]),
        ("session.updated", "authorized", "capture", "msg_3", DONE["capture"]),
        ("session.updated", "succeeded", "", "msg_4", PAID),
    ]


@pytest.mark.parametrize(
    ("status", "reason", "done"),
    [
        ("failed", "declined_by_issuer", NOT_PAID),
        ("canceled", "action_timeout", NOT_PAID),
        ("error", "processing_error", NOT_PAID),
        ("refunded", None, "order refunded: fulfilment reversed"),
    ],
)
async def test_the_shop_closes_the_order_on_a_final_status(
    partner: Partner, status: str, reason: str | None, done: str
) -> None:
    body = session_updated("ps_demo_1", status, reason=reason)
    assert await partner.relay(body, message_id="msg_1") == 200
    assert [row.done for row in await partner.rows()] == [done]
    assert partner.provider.calls == []


async def test_a_message_the_bridge_did_not_sign_is_refused(partner: Partner) -> None:
    provider = partner.provider
    await waiting_for_confirm(provider)
    genuine = session_updated("ps_demo_1", "in_progress", "confirm")
    changed = genuine.replace(b'"in_progress"', b'"authorized"')
    other_secret = "whsec_" + base64.b64encode(b"not the bridge's secret, 32 B").decode()
    late = datetime.now(UTC) - timedelta(minutes=6)
    refused: list[dict[str, Any]] = [
        {"signed": changed},  # bytes changed on the way
        {"secret": other_secret},  # signed by someone else
        {"at": late},  # an old message replayed (Standard Webhooks allow five minutes)
        {"at": datetime.now(UTC) + timedelta(minutes=6)},
        {"changed": {"webhook-id": "msg_2"}},  # signed for another message
        {"changed": {"webhook-timestamp": str(int(late.timestamp()) + 1)}},
        {"changed": {"webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"}},
        {"changed": {"webhook-signature": ""}},
        {"changed": {"webhook-signature": None}},  # not signed
        {"changed": {"webhook-id": None}},
        {"changed": {"webhook-timestamp": None}},
        {"changed": {"webhook-timestamp": "soon"}},
    ]
    for forged in refused:
        assert await partner.relay(genuine, message_id="msg_1", **forged) == 400, forged
    assert provider.calls == [] and await partner.rows() == []
    assert provider.sessions["ps_demo_1"].stage is Stage.CONFIRM  # still waiting for the shop

    # The genuine one, under the message id the refused ones carried, is acted on.
    assert await partner.relay(genuine, message_id="msg_1") == 200
    assert provider.calls == ["confirm"]
    assert [row.done for row in await partner.rows()] == [DONE["confirm"]]


async def test_a_message_that_comes_again_is_acted_on_once(partner: Partner) -> None:
    provider = partner.provider
    await waiting_for_confirm(provider)
    body = session_updated("ps_demo_1", "in_progress", "confirm")
    assert await partner.relay(body, message_id="msg_7", attempt=1) == 200
    assert await partner.relay(body, message_id="msg_7", attempt=2) == 200  # at least once
    await provider.settled("ps_demo_1")
    assert await partner.relay(body, message_id="msg_7", attempt=3) == 200  # signed anew
    assert provider.calls == ["confirm"]
    rows = await partner.rows()
    assert [(row.delivery, row.attempt, row.repeat) for row in rows] == [
        ("msg_7", "1", "no"),
        ("msg_7", "2", "yes"),
        ("msg_7", "3", "yes"),
    ]
    assert rows[0].done == DONE["confirm"]
    assert rows[1].done == rows[2].done == REPEAT


async def test_each_step_is_taken_once_per_session(partner: Partner) -> None:
    """Two messages that ask the same of one session (the same next action, the same final
    status) are one step: the shop confirms once and fulfils the order once."""
    provider = partner.provider
    await waiting_for_confirm(provider)
    confirm = session_updated("ps_demo_1", "in_progress", "confirm")
    assert await partner.relay(confirm, message_id="msg_1") == 200
    await provider.settled("ps_demo_1")
    assert await partner.relay(confirm, message_id="msg_2") == 200
    paid = session_updated("ps_demo_1", "succeeded")
    assert await partner.relay(paid, message_id="msg_3") == 200
    assert await partner.relay(paid, message_id="msg_4") == 200
    assert provider.calls == ["confirm"]
    assert [(row.repeat, row.done) for row in await partner.rows()] == [
        ("no", DONE["confirm"]),
        ("no", "nothing to do: confirm done before"),
        ("no", PAID),
        ("no", "nothing to do: succeeded done before"),
    ]


async def test_the_shop_refuses_what_is_no_event_and_takes_types_it_does_not_know(
    partner: Partner,
) -> None:
    provider = partner.provider
    await waiting_for_confirm(provider)
    no_session = json.dumps({"type": "session.updated", "data": {"status": "failed"}})
    for body in (b"not json", b"[]", b'{"type": "session.updated"}', no_session.encode()):
        assert await partner.relay(body, message_id="msg_1") == 400, body
    # Another type is taken (anything else would hold up the session's line) and left alone:
    # redirect-bridge relay-test's message, a type a newer bridge may send, and the provider's
    # own webhook (the shop parses no provider payload).
    assert await partner.relay(events.relay_test(time.time()).body, message_id="msg_2") == 200
    newer = json.dumps({"type": "session.archived", "data": {"session_id": "ps_demo_1"}})
    assert await partner.relay(newer.encode(), message_id="msg_3") == 200
    webhook = json.dumps(provider.sent[-1]).encode()  # ready_to_confirm
    assert await partner.relay(webhook, message_id="msg_4") == 200
    assert provider.calls == [] and await partner.rows() == []


NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("query", "trusted"),
    [
        (
            onward_url(
                "http://shop.test/r", session_id="ps_1", status="succeeded", ts=NOW, secret=SECRET
            ),
            True,
        ),
        (
            onward_url(
                "http://shop.test/r?order=7",
                session_id="ps_1",
                status="authorized",
                ts=NOW - 299,
                secret=SECRET,
            ),
            True,
        ),
        (
            onward_url(
                "http://shop.test/r",
                session_id="ps_1",
                status="succeeded",
                ts=NOW + 59,
                secret=SECRET,
            ),
            True,
        ),
        (
            onward_url(
                "http://shop.test/r",
                session_id="ps_1",
                status="succeeded",
                ts=NOW - 301,
                secret=SECRET,
            ),
            False,
        ),
        (
            onward_url(
                "http://shop.test/r",
                session_id="ps_1",
                status="succeeded",
                ts=NOW + 61,
                secret=SECRET,
            ),
            False,
        ),
        (
            onward_url(
                "http://shop.test/r", session_id="ps_1", status="succeeded", ts=NOW, secret="other"
            ),
            False,
        ),
        (
            onward_url(
                "http://shop.test/r", session_id="ps_1", status="failed", ts=NOW, secret=SECRET
            ).replace("failed", "succeeded"),
            False,
        ),
        (
            onward_url(
                "http://shop.test/r", session_id="ps_1", status="failed", ts=NOW, secret=None
            ),
            False,
        ),
    ],
)
def test_the_shop_checks_the_return_as_readme_tells_partners(query: str, trusted: bool) -> None:
    raw = urlsplit(query).query
    checked = check_return(raw, SECRET, now=NOW)
    assert checked == readme_check()(raw, SECRET, now=NOW)
    assert (checked is not None) is trusted


async def test_the_result_page_believes_only_a_signed_return(partner: Partner) -> None:
    provider = partner.provider
    provider.start(
        "ps_demo_1", return_url="http://bridge.test/back", redirect=REDIRECT, two_stage=False
    )
    provider.start(
        "ps_demo_2", return_url="http://bridge.test/back", redirect=REDIRECT, two_stage=False
    )

    async def page(session_id: str, status: str, **change: Any) -> str:
        args = {
            "session_id": session_id,
            "status": status,
            "ts": int(time.time()),
            "secret": SECRET,
        }
        url = onward_url("http://shop.test/result", **{**args, **change})
        answer = await partner.client.get(f"/result?{urlsplit(url).query}")
        assert answer.status_code == 200
        return await answer.get_data(as_text=True)

    genuine = await page("ps_demo_1", "succeeded")
    assert verified(genuine) and 'id="came-back-with">succeeded<' in genuine
    for refused in (
        await page("ps_demo_1", "succeeded", secret="not-the-shared-secret"),
        await page("ps_demo_1", "succeeded", ts=int(time.time()) - 3600),  # an old link
        await page("ps_demo_1", "succeeded", secret=None),
    ):
        assert not verified(refused) and 'id="came-back-with"' not in refused
        assert 'id="claimed">succeeded<' in refused
    # A genuine return for one session does not vouch for another.
    url = onward_url(
        "http://shop.test/r",
        session_id="ps_demo_2",
        status="succeeded",
        ts=int(time.time()),
        secret=SECRET,
    )
    other = await partner.client.get(f"/result?session_id=ps_demo_1&{urlsplit(url).query}")
    assert not verified(await other.get_data(as_text=True))
