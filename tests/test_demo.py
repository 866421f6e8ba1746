from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.demo import DemoError, serve_demo
from app.demo.simulated_provider import Provider, Stage
from app.provider import instant, parse_webhook

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


async def back_at_the_shop(demo: Demo, pay_url: str, session_id: str, status: str) -> Answer:
    """The bridge's page sends the customer to the shop's result page with the outcome."""
    onward = await fetch(pay_url)
    assert onward.status == 303, onward
    location = urlsplit(onward.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == f"{demo.shop}/result"
    query = parse_qs(location.query)
    assert query["session_id"] == [session_id] and query["status"] == [status]
    result = await fetch(onward.headers["location"])
    assert result.status == 200
    assert f'id="came-back-with">{status}<' in result.text
    return result


CONFIRMED = ["ready_to_confirm", "confirm", "action_required"]


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

    # The shop confirmed: now, and only now, the bank step.
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

    answered = await fetch(
        f"{demo.shop}/provider/return", [("session", session_id), ("decision", decision)], "POST"
    )
    assert answered.status == 303
    assert answered.headers["location"] == f"{pay_url}/return"
    back = await fetch(f"{pay_url}/return")
    assert back.status == 200 and "Checking the result" in back.text

    for status in statuses:
        assert await watch.next() == status
        result = await back_at_the_shop(demo, pay_url, session_id, status)
    assert heading(result.text) == ending
    assert 'id="bridge-status">' + statuses[-1] + "<" in result.text
    assert '<meta http-equiv="refresh"' not in result.text
    assert history(result.text) == CONFIRMED + steps

    forged = {"session_id": session_id, "status": '<b id="x">succeeded</b>'}
    shown = await fetch(f"{demo.shop}/result?{urlencode(forged)}")
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

    async def send(self, webhook: Mapping[str, Any]) -> None:
        self.sent.append(dict(webhook))

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
