"""A way out, in Chromium: the customer gives up on the waiting, bank or "open elsewhere" page, in
a tab of its own and in the embedding script's iframe and popup, and ends at the outcome; and
the page tells the bridge how the bank form went (the history's ``browser`` events)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Frame, Locator, Page, expect

from ..payloads import webhook
from .conftest import Console, customer_context
from .harness import Bank, Bridge, Partner, wait_until
from .test_embedding import (
    FRAME,
    LAST_IS_COMPLETE,
    action_required,
    bridge_frame,
    embedded,
    events,
)

SECRET = "way-out-return-secret-0123456789abcdef"
ELSEWHERE = {"type": "inform", "inform": {"notification": {"type": "sber_pay_widget"}}}
HEADINGS = {
    "waiting": "Preparing your payment",
    "bank": "Going to your bank",
    "elsewhere": "Finish the payment with your bank",
}
# How the embedding script shows the bridge, and the mode the page reports the bank form in.
MODES = {"tab": "page", "iframe": "iframe", "popup": "popup"}


@pytest.fixture
def context(popup_blocking_browser: Browser, console: Console) -> Iterator[BrowserContext]:
    """This module's customers have Chromium's popup blocker on."""
    context = customer_context(popup_blocking_browser, console)
    yield context
    context.close()


@pytest.fixture
def shop_bridge(bridge_factory: Callable[..., Bridge], partner: Partner) -> Bridge:
    """A bridge that lets ``partner`` frame it and sends customers back to its shop, signed."""
    return bridge_factory(
        FRAME_ANCESTORS=partner.url, RETURN_URL=f"{partner.url}/done", RETURN_SECRET=SECRET
    )


def history(bridge: Bridge, session_id: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {bridge.api_key}"}
    status, _, body = bridge.call("GET", f"/api/v1/sessions/{session_id}/events", None, headers)
    assert status == 200, body[:200]
    answer: list[dict[str, Any]] = json.loads(body)["events"]
    return answer


def kinds(bridge: Bridge, session_id: str, kind: str) -> list[dict[str, Any]]:
    return [event for event in history(bridge, session_id) if event["kind"] == kind]


def bring(kind: str, bridge: Bridge, bank: Bank, session_id: str, token: dict[str, Any]) -> None:
    """The provider's word that brings the session to the page of ``kind``."""
    if kind == "bank":
        action_required(bridge, bank, session_id, token)
    elif kind == "elsewhere":
        bridge.send(webhook("action_required", session_id, interaction=ELSEWHERE))


def open_bridge(
    mode: str, page: Page, partner: Partner, bridge: Bridge, token: dict[str, Any]
) -> tuple[Page, Callable[[], Page | Frame]]:
    """The bridge's first page as the customer has it: the window it is in (the tab, the
    partner's checkout, the popup), and where its document is (a frame may change)."""
    if mode == "tab":
        page.goto(token["pay_url"])
        return page, lambda: page
    page.goto(partner.checkout(bridge, status_url=token["status_url"], mode=mode))
    if mode == "iframe":
        page.click("#pay")
        return page, lambda: bridge_frame(page)
    with page.expect_popup() as opened:
        page.click("#pay")
    popup = opened.value
    return popup, lambda: popup


def again_at_the_bridge(document: Page | Frame, url: str) -> None:
    """The customer is back on the bridge's page after the bank (the form went during the page's
    load, so Back leaves it: a reload, or the shop sending it there again), in the same tab,
    frame or popup."""
    document.goto(url)
    expect(document.locator("#bank-again")).to_be_visible()


def cancel_button(mode: str, window: Page) -> Locator:
    within = window.frame_locator(FRAME) if mode == "iframe" else window
    return within.locator('[data-bridge-action="cancel"]')


def signed_return(url: str, session_id: str) -> dict[str, str]:
    query = urlsplit(url).query
    body, _, sig = query.rpartition("&sig=")
    assert sig == hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    values = dict(parse_qsl(query))
    assert (values["session_id"], values["status"]) == (session_id, "canceled")
    return values


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("kind", list(HEADINGS))
def test_a_customer_gives_up_and_ends_at_the_outcome(
    kind: str,
    mode: str,
    page: Page,
    partner: Partner,
    shop_bridge: Bridge,
    bank: Bank,
    session_id: str,
) -> None:
    bridge = shop_bridge
    token = bridge.token(session_id)
    bring(kind, bridge, bank, session_id, token)
    window, document = open_bridge(mode, page, partner, bridge, token)
    if kind == "bank":  # the form went by itself; the customer is then back on the bank page
        wait_until(lambda: len(bank.posts()) == 1)
        document().wait_for_url(f"{bank.url}/**")
        again_at_the_bridge(
            document(), token["pay_url"] if mode == "tab" else embedded(token, partner)
        )
    button = cancel_button(mode, window)
    expect(button).to_have_text("Cancel payment")
    heading = window.frame_locator(FRAME) if mode == "iframe" else window
    expect(heading.get_by_role("heading")).to_have_text(HEADINGS[kind])

    if mode == "popup":
        with window.expect_event("close", timeout=5000):  # the script closes it once done
            button.click()
    else:
        button.click()
    if mode == "tab":  # on to the shop, signed, by the outcome page's script
        page.wait_for_url(f"{partner.url}/done?**", timeout=5000)
        signed_return(page.url, session_id)
        expect(page.get_by_role("heading")).to_have_text("Back at the shop")
    else:
        page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
        assert events(page)[-1] == ["complete", "canceled"]
        expect(page.locator(FRAME)).to_have_count(0)
        assert page.url.startswith(f"{partner.url}/checkout")  # the shop's page stayed
    status = bridge.status(token["token"])
    assert (status["status"], status["reason"]) == ("canceled", "customer")
    assert len(kinds(bridge, session_id, "cancel")) == 1
    assert len(bank.posts()) == (1 if kind == "bank" else 0)  # never posted again


@pytest.mark.parametrize("mode", list(MODES))
def test_the_page_reports_the_bank_form_with_its_mode(
    mode: str, page: Page, partner: Partner, shop_bridge: Bridge, bank: Bank, session_id: str
) -> None:
    bridge = shop_bridge
    token = bridge.token(session_id)
    action_required(bridge, bank, session_id, token)
    open_bridge(mode, page, partner, bridge, token)
    wait_until(lambda: len(bank.posts()) == 1)
    wait_until(lambda: bool(kinds(bridge, session_id, "browser")))
    page.wait_for_timeout(300)  # no second report comes
    (reported,) = kinds(bridge, session_id, "browser")
    assert (reported["event"], reported["mode"]) == ("bank", MODES[mode])
    assert set(reported) == {"at", "kind", "event", "mode"}


def test_without_script_the_outcome_offers_the_way_to_the_shop(
    browser: Browser, shop_bridge: Bridge, partner: Partner, session_id: str
) -> None:
    console = Console()
    scriptless = browser.new_context(java_script_enabled=False)
    scriptless.on("page", console.watch)
    tab = scriptless.new_page()
    token = shop_bridge.token(session_id)
    tab.goto(token["pay_url"])
    expect(tab.get_by_role("heading")).to_have_text(HEADINGS["waiting"])
    tab.locator('[data-bridge-action="cancel"]').click()
    expect(tab.get_by_role("heading")).to_have_text("Payment canceled")
    tab.get_by_role("link", name="Continue to the shop").click()
    tab.wait_for_url(f"{partner.url}/done?**")
    signed_return(tab.url, session_id)
    scriptless.close()
    assert console.problems() == []
