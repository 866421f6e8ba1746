"""In-app browsers (app/inapp.py's table) in Chromium, with each sample user agent: the bank
step does not go by itself; the page offers the customer's own browser through a handoff link
(``intent://`` on Android; the link and a copy button on iOS) and to continue here."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from ..test_inapp import SAMPLES
from .conftest import Console
from .harness import Bank, Bridge
from .test_one_page import (
    CONTINUE_HERE,
    PHONE,
    bank_step,
    finish_at_the_bank,
    open_elsewhere,
    posts_stay,
)

OPEN_BROWSER = "[data-bridge-action=open-browser]"
INSTAGRAM_ANDROID = next(agent for name, agent in SAMPLES if name == "Instagram")
INSTAGRAM_IOS = [agent for name, agent in SAMPLES if name == "Instagram"][1]


@pytest.fixture
def device(browser: Browser, console: Console) -> Iterator[Callable[[str], Page]]:
    """A tab in a browser of its own with the given user agent."""
    contexts: list[BrowserContext] = []

    def open_tab(agent: str) -> Page:
        context = browser.new_context(
            user_agent=agent, viewport={"width": 390, "height": 800}, is_mobile=True
        )
        context.on("page", console.watch)
        contexts.append(context)
        return context.new_page()

    yield open_tab
    for context in contexts:
        context.close()
    assert console.problems() == []


def in_app_page(
    device: Callable[[str], Page], agent: str, bridge: Bridge, bank: Bank, session_id: str
) -> Page:
    token = bridge.token(session_id)
    bank_step(bridge, bank, session_id, token)
    app = device(agent)
    app.goto(token["pay_url"])
    expect(app.locator(OPEN_BROWSER)).to_have_attribute("href", re.compile("/pay/handoff/"))
    expect(app.locator(CONTINUE_HERE)).to_be_visible()
    return app


@pytest.mark.parametrize(
    ("name", "agent"),
    SAMPLES,
    ids=[f"{name}-{'android' if 'Android' in agent else 'ios'}" for name, agent in SAMPLES],
)
def test_an_in_app_browser_offers_the_customers_own_browser(
    device: Callable[[str], Page],
    bridge: Bridge,
    bank: Bank,
    session_id: str,
    name: str,
    agent: str,
) -> None:
    app = in_app_page(device, agent, bridge, bank, session_id)
    href = app.locator(OPEN_BROWSER).get_attribute("href") or ""
    host = bridge.url.removeprefix("http://")
    if "Android" in agent:
        assert re.fullmatch(
            rf"intent://{re.escape(host)}/pay/handoff/[A-Za-z0-9_-]{{43}}#Intent;scheme=http;"
            r"action=android\.intent\.action\.VIEW;category=android\.intent\.category\.BROWSABLE;end",
            href,
        ), href
        expect(app.locator("[data-bridge-action=copy-link]")).to_be_hidden()
    else:
        assert re.fullmatch(rf"{re.escape(bridge.url)}/pay/handoff/[A-Za-z0-9_-]{{43}}", href)
        expect(app.locator("[data-bridge-action=copy-link]")).to_be_visible()
    posts_stay(bank, app, 0)


def test_the_customers_browser_takes_the_step_from_the_app(
    device: Callable[[str], Page], bridge: Bridge, bank: Bank, session_id: str
) -> None:
    app = in_app_page(device, INSTAGRAM_ANDROID, bridge, bank, session_id)
    href = app.locator(OPEN_BROWSER).get_attribute("href") or ""
    # What Android does with the intent: the default browser opens the https (here http) link.
    where, _, _ = href.removeprefix("intent://").partition("#Intent")
    own_browser = device(PHONE)
    own_browser.goto(f"http://{where}")
    own_browser.wait_for_url(f"{bank.url}/acs/**", timeout=5000)
    open_elsewhere(app)  # the app's page learns it, and follows
    finish_at_the_bank(own_browser, bridge, bank, session_id)
    expect(app.get_by_role("heading")).to_have_text("Payment complete", timeout=5000)
    assert len(bank.posts()) == 1


def test_continue_here_goes_on_inside_the_app(
    device: Callable[[str], Page], bridge: Bridge, bank: Bank, session_id: str
) -> None:
    app = in_app_page(device, INSTAGRAM_IOS, bridge, bank, session_id)
    posts_stay(bank, app, 0)
    app.click(CONTINUE_HERE)
    finish_at_the_bank(app, bridge, bank, session_id)
    assert len(bank.posts()) == 1
