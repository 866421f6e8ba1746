"""One page at the bank at a time, and "continue on your phone", in Chromium on both engines.

A session's bank step is submitted by one page: another tab, a reload or another browser shows
that the step is open elsewhere and posts nothing until its customer clicks ``continue-here``.
The bank counts every post it receives; each test ends at the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from ..payloads import redirect, webhook
from .conftest import Console
from .harness import Bank, Bridge, Partner, wait_until

CONTINUE_HERE = "[data-bridge-action=continue-here]"
ON_PHONE = "[data-bridge-action=continue-on-phone]"
PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/126.0.0.0 Mobile Safari/537.36"
)


def bank_step(bridge: Bridge, bank: Bank, session_id: str, token: dict[str, Any]) -> None:
    """The provider asks for the bank step; the bank sends the customer back to the bridge."""
    url = f"{bank.url}/acs/challenge"
    params = {"PaReq": "p", "MD": "m", "TermUrl": token["return_url"]}
    interaction = redirect(url=url, base_url=url, params=params)
    bridge.send(webhook("action_required", session_id, interaction=interaction))


def posts_stay(bank: Bank, page: Page, count: int) -> None:
    """The bank has received ``count`` posts, and no more come while the page stands."""
    wait_until(lambda: len(bank.posts()) == count)
    page.wait_for_timeout(1500)
    assert len(bank.posts()) == count


def open_elsewhere(page: Page) -> None:
    expect(page.locator("#step-elsewhere")).to_be_visible(timeout=10000)
    expect(page.locator(CONTINUE_HERE)).to_be_visible()


def finish_at_the_bank(page: Page, bridge: Bridge, bank: Bank, session_id: str) -> None:
    """The customer completes the bank's page in ``page``; the provider then says it is paid."""
    page.wait_for_url(f"{bank.url}/acs/**", timeout=5000)
    page.click("#complete")
    expect(page.get_by_role("heading")).to_have_text("Checking the result", timeout=5000)
    bridge.send(webhook("payment_finished", session_id, session_status="accepted"))
    expect(page.get_by_role("heading")).to_have_text("Payment complete", timeout=5000)


@pytest.fixture
def phone(browser: Browser, console: Console) -> Iterator[BrowserContext]:
    """Another browser: the customer's phone."""
    context = browser.new_context(
        user_agent=PHONE, viewport={"width": 390, "height": 800}, is_mobile=True
    )
    context.on("page", console.watch)
    yield context
    context.close()


def second_tab(
    page: Page, context: BrowserContext, bridge: Bridge, bank: Bank, session_id: str
) -> Page:
    """The customer's tab goes to the bank; another tab opens the same page: what it shows."""
    token = bridge.token(session_id)
    bank_step(bridge, bank, session_id, token)
    page.goto(token["pay_url"])
    page.wait_for_url(f"{bank.url}/acs/**")
    second = context.new_page()
    second.goto(token["pay_url"])
    open_elsewhere(second)
    return second


def test_a_second_tab_posts_nothing_until_continue_here(
    page: Page, context: BrowserContext, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    second = second_tab(page, context, bridge, bank, session_id)
    expect(second.locator("#bank-going")).to_be_hidden()
    posts_stay(bank, second, 1)

    second.click(CONTINUE_HERE)  # the customer takes the step to this tab
    finish_at_the_bank(second, bridge, bank, session_id)
    assert len(bank.posts()) == 2


def test_a_reload_posts_nothing_and_the_tab_keeps_its_step(
    page: Page, context: BrowserContext, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    second = second_tab(page, context, bridge, bank, session_id)
    page.go_back()
    page.reload()
    expect(page.locator("#bank-again")).to_be_visible()
    expect(page.locator("#step-elsewhere")).to_be_hidden()  # the same tab: still its step
    second.reload()
    open_elsewhere(second)
    posts_stay(bank, second, 1)

    page.click("#bank-again button")  # the customer asks for the bank page again, on purpose
    finish_at_the_bank(page, bridge, bank, session_id)
    assert len(bank.posts()) == 2
    expect(second.get_by_role("heading")).to_have_text("Payment complete", timeout=5000)


def a_handoff(page: Page) -> str:
    """Click "continue on your phone" in ``page``: the QR code's link."""
    with page.expect_response(lambda answer: answer.url.endswith("/handoff")) as made:
        page.click(ON_PHONE)
    answer = made.value
    assert answer.status == 201
    expect(page.locator("#phone-qr")).to_be_visible()
    expect(page.locator(ON_PHONE)).to_be_hidden()  # one link at a time
    assert page.locator("#phone-qr").get_attribute("src").startswith("data:image/svg+xml")
    return str(json.loads(answer.body())["handoff_url"])


def test_the_phone_takes_the_step_and_the_first_browser_follows(
    page: Page,
    phone: BrowserContext,
    bridge: Bridge,
    bank: Bank,
    session_id: str,
    console: Console,
) -> None:
    console.expect_status(410)
    token = bridge.token(session_id)
    page.goto(token["pay_url"])
    expect(page.get_by_role("heading")).to_have_text("Preparing your payment")
    link = a_handoff(page)
    assert token["token"] not in link

    # A chat app's preview fetches the link: that claims nothing.
    status, _, body = bridge.call("GET", link.removeprefix(bridge.url))
    assert status == 200 and b"handoff-form" in body
    page.wait_for_timeout(5500)  # a check of the page's hold has come and gone
    expect(page.locator("#phone-qr")).to_be_visible()

    on_phone = phone.new_page()
    on_phone.goto(link)  # the camera opens the link; the page's script claims it
    expect(on_phone.get_by_role("heading")).to_have_text("Preparing your payment")
    assert "/pay/handoff/" not in on_phone.url
    open_elsewhere(page)  # the first browser learns it, and follows
    expect(page.locator("#phone-qr")).to_be_hidden()

    again = phone.new_page()
    response = again.goto(link)
    assert response is not None and response.status == 410

    bank_step(bridge, bank, session_id, token)
    on_phone.wait_for_url(f"{bank.url}/acs/**", timeout=5000)
    open_elsewhere(page)  # now on the bank page: it does not submit
    posts_stay(bank, page, 1)
    finish_at_the_bank(on_phone, bridge, bank, session_id)
    expect(page.get_by_role("heading")).to_have_text("Payment complete", timeout=5000)
    assert len(bank.posts()) == 1
    history = json.loads(
        bridge.call(
            "GET",
            f"/api/v1/sessions/{session_id}/events",
            headers={"Authorization": f"Bearer {bridge.api_key}"},
        ).body
    )["events"]
    told = [(e["event"], e["mode"]) for e in history if e["kind"] == "browser"]
    assert told == [("handoff", None), ("bank", "page")]  # the phone took it, then sent the form


def test_continue_here_takes_the_step_back_from_the_phone(
    page: Page, phone: BrowserContext, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    token = bridge.token(session_id)
    page.goto(token["pay_url"])
    link = a_handoff(page)
    on_phone = phone.new_page()
    on_phone.goto(link)
    expect(on_phone.get_by_role("heading")).to_have_text("Preparing your payment")
    bank_step(bridge, bank, session_id, token)
    on_phone.wait_for_url(f"{bank.url}/acs/**", timeout=5000)
    open_elsewhere(page)
    posts_stay(bank, page, 1)

    page.click(CONTINUE_HERE)
    finish_at_the_bank(page, bridge, bank, session_id)
    assert len(bank.posts()) == 2


def test_a_window_opened_to_take_the_step_takes_it_without_a_click(
    page: Page, context: BrowserContext, bridge: Bridge, bank: Bank, session_id: str
) -> None:
    """As the embedding script opens a window for a step it moves out of its frame."""
    second = second_tab(page, context, bridge, bank, session_id)
    posts_stay(bank, second, 1)
    window = context.new_page()
    token = bridge.token(session_id)
    window.goto(f"{token['pay_url']}?take=1")
    finish_at_the_bank(window, bridge, bank, session_id)
    assert len(bank.posts()) == 2


def test_another_sites_page_cannot_claim_the_step(
    page: Page,
    bridge: Bridge,
    bank: Bank,
    session_id: str,
    stranger: Partner,
    console: Console,
) -> None:
    console.expect_status(403)  # each refusal
    token = bridge.token(session_id)
    page.goto(stranger.checkout(bridge))
    answers = page.evaluate(
        """async (urls) => {
          const answers = [];
          for (const url of urls) {
            const body = JSON.stringify({page: "f".repeat(32), take: true});
            const sent = await fetch(url, {method: "POST", body: body, mode: "no-cors"});
            answers.push(sent.type);
          }
          return answers;
        }""",
        [f"{bridge.url}/pay/{token['token']}/claim", f"{bridge.url}/pay/{token['token']}/handoff"],
    )
    assert answers == ["opaque", "opaque"]  # sent, and refused: the step is still free
    bank_step(bridge, bank, session_id, token)
    page.goto(token["pay_url"])
    finish_at_the_bank(page, bridge, bank, session_id)
    assert len(bank.posts()) == 1
