from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlencode

import pytest

from app.demo import DemoError, serve_demo


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _fetch(url: str, form: list[tuple[str, str]] | None = None, method: str = "GET") -> Answer:
    data = None if form is None else urlencode(form).encode()
    if method == "GET" and data is not None:
        url, data = f"{url}{'&' if '?' in url else '?'}{data.decode()}", None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with _opener.open(request, timeout=10) as response:
            return Answer(response.status, _headers(response.headers), response.read().decode())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, _headers(error.headers), error.read().decode())


def _headers(message: Message) -> dict[str, str]:
    return {name.lower(): value for name, value in message.items()}


async def fetch(url: str, form: list[tuple[str, str]] | None = None, method: str = "GET") -> Answer:
    return await asyncio.to_thread(_fetch, url, form, method)


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


async def wait_for_status(demo: Demo, token: str, wanted: str) -> dict[str, object]:
    for _ in range(20):
        answer = await fetch(f"{demo.bridge}/api/v1/status/{token}?wait=1")
        assert answer.status == 200, answer
        status = json.loads(answer.text)
        if status["status"] == wanted:
            return status
    raise AssertionError(f"the status never became {wanted}: {status}")


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


@pytest.mark.parametrize(
    ("method", "decision", "outcome"),
    [
        ("post", "approve", "succeeded"),
        ("get", "decline", "failed"),
    ],
)
async def test_the_whole_journey(demo: Demo, method: str, decision: str, outcome: str) -> None:
    shop = await fetch(f"{demo.shop}/")
    assert shop.status == 200 and "Pay 150.00 USD" in shop.text

    checkout = await fetch(f"{demo.shop}/checkout", [("method", method)], "POST")
    assert checkout.status == 303
    pay_url = checkout.headers["location"]
    assert pay_url.startswith(f"{demo.bridge}/pay/")
    token = pay_url.rsplit("/", 1)[1]
    waiting = await fetch(pay_url)
    assert waiting.status == 200 and "Preparing your payment" in waiting.text

    await wait_for_status(demo, token, "action_required")
    page = await fetch(pay_url)
    form_method, action, fields = bank_form(page.text)
    assert form_method == method.upper() and action.startswith(f"{demo.shop}/acs")
    assert f"form-action 'self' {demo.shop} " in page.headers["content-security-policy"]
    bank = await fetch(action, fields, form_method)
    assert bank.status == 200
    assert "arrived exactly as the provider sent it" in bank.text, bank.text
    assert ("PaReq" in bank.text) is (method == "post")
    session_id = re.search(r"<code>(ps_demo_\w+)</code>", bank.text)
    assert session_id is not None

    answered = await fetch(
        f"{demo.shop}/provider/return", [("session", session_id[1]), ("decision", decision)], "POST"
    )
    assert answered.status == 303
    assert answered.headers["location"] == f"{pay_url}/return"
    back = await fetch(f"{pay_url}/return")
    assert back.status == 200 and "Checking the result" in back.text

    await wait_for_status(demo, token, outcome)
    final = await fetch(pay_url)
    assert ("Payment complete" in final.text) is (outcome == "succeeded")


async def test_a_busy_port_is_one_clear_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(DemoError, match=f"port {port} on 127.0.0.1 is already in use"):
            await serve_demo("127.0.0.1", port, _free_ports()[0])
