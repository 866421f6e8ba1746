"""The customer's moment: a real browser reaching the bank with exactly the right form."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from ..payloads import redirect, webhook
from .conftest import Console
from .harness import Bank, Bridge, wait_until

TRICKY = {
    "quotes": "say \"hi\" and 'bye'",
    "markup": "<script>alert(1)</script><b>bold</b>",
    "amp": "a & b &amp; c &lt;",
    "b64": "ab+/cd==",
    "newlines": "one\ntwo\r\nthree\rfour",
    "unicode": "Привет, 世界 ✓ é",
    "PaReq": "eJxVUttuozAQ/RXEc8OYSxKSmQsq6U" * 280,  # about 8 KB of base64
}


def as_submitted(value: str) -> str:
    """A form submission turns a lone CR or LF into CR LF: the one change allowed."""
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")


def action(bank: Bank, *, method: str = "POST", **instruction: Any) -> dict[str, Any]:
    url = f"{bank.url}/acs/challenge"
    return redirect(url=f"{url}?foo=bar", base_url=url, method=method, **instruction)


def start(bridge: Bridge, session_id: str, interaction: dict[str, Any] | None) -> str:
    """A token, and the provider's action_required (when given) already delivered."""
    token = bridge.token(session_id)
    if interaction is not None:
        bridge.send(webhook("action_required", session_id, interaction=interaction))
    return token["pay_url"]


def test_post_keeps_qs_and_sends_every_param(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    params = {"PaReq": "eJzVWNmu4jgQ/Z+nvA==", "MD": "abc75daefnn", "TermUrl": "https://x.test/"}
    pay_url = start(bridge, session_id, action(bank, qs={"foo": "bar", "x": "1 2"}, params=params))
    page.goto(pay_url)
    wait_until(lambda: len(bank.posts()) == 1)
    arrival = bank.posts()[0]
    assert (arrival.method, arrival.path) == ("POST", "/acs/challenge")
    assert arrival.query == "foo=bar&x=1+2"
    assert arrival.fields == list(params.items())


def test_get_carries_qs_and_params_in_the_query_string(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    params = {"creq": "eyJ0aHJlZURTU2VydmVyVHJhbnNJRCI6IjEyMyJ9", "threeDSSessionData": "a b"}
    pay_url = start(bridge, session_id, action(bank, method="GET", params=params))
    page.goto(pay_url)
    wait_until(lambda: len(bank.posts()) == 1)
    arrival = bank.posts()[0]
    assert (arrival.method, arrival.path, arrival.body) == ("GET", "/acs/challenge", b"")
    assert arrival.fields == [("foo", "bar"), *params.items()]


def test_field_values_arrive_byte_for_byte(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    pay_url = start(bridge, session_id, action(bank, params=TRICKY))
    page.goto(pay_url)
    wait_until(lambda: len(bank.posts()) == 1)
    expected = [(name, as_submitted(value)) for name, value in TRICKY.items()]
    assert bank.posts()[0].fields == expected


def test_field_values_arrive_byte_for_byte_on_get(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    params = {name: value for name, value in TRICKY.items() if name != "PaReq"}
    pay_url = start(bridge, session_id, action(bank, method="GET", params=params))
    page.goto(pay_url)
    wait_until(lambda: len(bank.posts()) == 1)
    # No form is submitted on GET: the URL is built by the bridge, so even newlines are exact.
    assert bank.posts()[0].fields == [("foo", "bar"), *params.items()]


def test_get_keeps_the_banks_own_query_string_byte_for_byte(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    query = "d=%C0%E1&flag&s=a%20b"
    instruction = redirect(
        url=f"{bank.url}/acs/challenge?{query}",
        base_url=None,
        method="GET",
        qs={},
        params={"creq": "x"},
    )
    page.goto(start(bridge, session_id, instruction))
    wait_until(lambda: len(bank.posts()) == 1)
    assert bank.posts()[0].query == f"{query}&creq=x"


def test_fields_named_submit_and_action_cannot_break_the_form(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    params = {"submit": "1", "action": "https://evil.test/", "PaReq": "x"}
    pay_url = start(bridge, session_id, action(bank, params=params))
    page.goto(pay_url)
    wait_until(lambda: len(bank.posts()) == 1)
    arrival = bank.posts()[0]
    assert arrival.path == "/acs/challenge"
    assert arrival.fields == list(params.items())


def test_without_javascript_the_continue_button_gets_there(
    context: BrowserContext, browser: Any, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    no_script = browser.new_context(java_script_enabled=False)
    try:
        tab = no_script.new_page()
        pay_url = start(bridge, session_id, action(bank, params={"PaReq": "p", "MD": "m"}))
        tab.goto(pay_url)
        button = tab.get_by_role("button", name="Continue to your bank")
        expect(button).to_be_visible()
        assert bank.posts() == []
        button.click()
        wait_until(lambda: len(bank.posts()) == 1)
        assert bank.posts()[0].fields == [("PaReq", "p"), ("MD", "m")]
    finally:
        no_script.close()


def test_the_waiting_page_moves_on_when_the_webhook_arrives(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    pay_url = start(bridge, session_id, None)
    page.goto(pay_url)
    expect(page.get_by_role("heading")).to_have_text("Preparing your payment")
    page.wait_for_timeout(1500)
    assert bank.posts() == []
    bridge.send(webhook("action_required", session_id, interaction=action(bank)))
    page.wait_for_url(f"{bank.url}/acs/challenge?foo=bar", timeout=5000)
    assert len(bank.posts()) == 1


def test_the_return_from_the_bank_shows_the_outcome(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    token = bridge.token(session_id)
    params = {"PaReq": "p", "MD": "m", "TermUrl": f"{token['pay_url']}/return"}
    bridge.send(webhook("action_required", session_id, interaction=action(bank, params=params)))
    page.goto(token["pay_url"])
    page.wait_for_url(f"{bank.url}/**")
    page.click("#complete")
    page.wait_for_url(f"{token['pay_url']}/return")
    expect(page.get_by_role("heading")).to_have_text("Checking the result")
    bridge.send(webhook("payment_finished", session_id, session_status="accepted"))
    expect(page.get_by_role("heading")).to_have_text("Payment complete", timeout=5000)
    assert bridge.status(token["token"])["status"] == "succeeded"


def test_a_passed_window_shows_the_expired_page(
    page: Page, bridge_factory: Any, bank: Bank, session_id: str, console: Console
) -> None:
    console.expect_status(410)
    short = bridge_factory(ACTION_TIMEOUT=1, TOKEN_TTL=60)
    pay_url = start(short, session_id, action(bank))
    page.wait_for_timeout(1100)
    response = page.goto(pay_url)
    assert response is not None and response.status == 410
    expect(page.get_by_role("heading")).to_have_text("This payment has expired")
    assert bank.posts() == []


def test_back_after_the_bank_never_posts_the_old_form_again(
    page: Page, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    pay_url = start(bridge, session_id, action(bank, params={"PaReq": "p"}))
    page.goto(f"{bank.url}/shop")  # the partner's page before ours
    bank.arrivals.clear()
    page.evaluate("url => { window.location.href = url; }", pay_url)
    page.wait_for_url(f"{bank.url}/acs/**")
    page.go_back()
    page.wait_for_timeout(1000)
    assert len(bank.posts()) == 1
    # However the tab comes back to the page (Back, a reload, the shop sending it again), the
    # old form is offered with a button, never posted by itself.
    page.goto(pay_url)
    expect(page.locator("#bank-again")).to_be_visible()
    page.wait_for_timeout(500)
    assert len(bank.posts()) == 1
