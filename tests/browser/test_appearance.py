"""What customers see: every page state at phone width, its screenshot, and accessibility."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from ..payloads import inform, redirect, webhook
from ..test_inapp import SAMPLES
from .conftest import Console
from .harness import Bank, Bridge


def bank_step(bank: Bank) -> dict[str, Any]:
    return redirect(url=f"{bank.url}/acs", base_url=None, params={"PaReq": "p", "MD": "m"})


def delivered(kind: str, **fields: Any) -> Callable[[Bank, str], dict[str, Any]]:
    """The webhook that brings a session to a state, made once the test knows its session."""
    return lambda bank, session_id: webhook(kind, session_id, **fields)


# name: (the webhook, if any; the path after the pay URL; the heading; the HTTP status)
STATES: dict[str, tuple[Callable[[Bank, str], dict[str, Any]] | None, str, str, int]] = {
    "waiting": (None, "", "Preparing your payment", 200),
    "checking": (
        lambda bank, session_id: webhook(
            "action_required", session_id, interaction=bank_step(bank)
        ),
        "/return",
        "Checking the result",
        200,
    ),
    "succeeded": (
        delivered("payment_finished", session_status="accepted"),
        "",
        "Payment complete",
        200,
    ),
    "failed": (
        delivered("payment_finished", payment_status="failed", error_code="declined"),
        "",
        "Payment not approved",
        200,
    ),
    "approved": (delivered("ready_to_capture"), "", "Payment approved", 200),
    "qr": (delivered("action_required", interaction=inform()), "", "Scan to pay", 200),
    "elsewhere": (
        delivered(
            "action_required",
            interaction={"type": "inform", "inform": {"notification": {"type": "sber_pay_widget"}}},
        ),
        "",
        "Finish the payment with your bank",
        200,
    ),
    "refused": (
        delivered(
            "action_required", interaction=redirect(url="https://acs.bank,evil/x", base_url=None)
        ),
        "",
        "We could not open your bank's page",
        502,
    ),
}


def fits_a_phone(page: Page) -> None:
    page.set_viewport_size({"width": 320, "height": 640})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0


@pytest.mark.parametrize("state", list(STATES))
def test_each_page_state(
    page: Page,
    bridge: Bridge,
    bank: Bank,
    session_id: str,
    console: Console,
    screenshots: Path,
    state: str,
) -> None:
    event, suffix, heading, status = STATES[state]
    console.expect_status(status)
    token = bridge.token(session_id)
    if event is not None:
        bridge.send(event(bank, session_id))
    response = page.goto(token["pay_url"] + suffix)
    assert response is not None and response.status == status
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    page.screenshot(path=screenshots / f"{state}.png")
    fits_a_phone(page)


def test_the_bank_page_without_javascript(
    browser: Browser, bridge: Bridge, bank: Bank, session_id: str, screenshots: Path
) -> None:
    context = browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 800})
    try:
        tab = context.new_page()
        token = bridge.token(session_id)
        bridge.send(webhook("action_required", session_id, interaction=bank_step(bank)))
        tab.goto(token["pay_url"])
        expect(tab.get_by_role("heading", level=1)).to_have_text("Going to your bank")
        expect(tab.get_by_role("button", name="Continue to your bank")).to_be_visible()
        tab.screenshot(path=screenshots / "bank.png")
        fits_a_phone(tab)
    finally:
        context.close()


def test_the_expired_page(
    page: Page,
    bridge_factory: Callable[..., Bridge],
    bank: Bank,
    session_id: str,
    console: Console,
    screenshots: Path,
) -> None:
    console.expect_status(410)
    short = bridge_factory(ACTION_TIMEOUT=1, TOKEN_TTL=60)
    token = short.token(session_id)
    short.send(webhook("action_required", session_id, interaction=bank_step(bank)))
    page.wait_for_timeout(1100)
    page.goto(token["pay_url"])
    expect(page.get_by_role("heading", level=1)).to_have_text("This payment has expired")
    page.screenshot(path=screenshots / "expired.png")
    fits_a_phone(page)


def test_the_not_found_page(
    page: Page, bridge: Bridge, console: Console, screenshots: Path
) -> None:
    console.expect_status(404)
    page.goto(f"{bridge.url}/pay/not-a-token")
    expect(page.get_by_role("heading", level=1)).to_have_text("This link is not valid")
    page.screenshot(path=screenshots / "not-found.png")


def test_russian_from_the_browser_language(
    browser: Browser, bridge: Bridge, session_id: str, screenshots: Path
) -> None:
    context = browser.new_context(locale="ru-RU", viewport={"width": 390, "height": 800})
    try:
        tab = context.new_page()
        tab.goto(bridge.token(session_id)["pay_url"])
        assert tab.evaluate("document.documentElement.lang") == "ru"
        expect(tab.get_by_role("heading", level=1)).to_have_text("Готовим платёж")
        tab.screenshot(path=screenshots / "waiting-ru.png")
    finally:
        context.close()


def test_status_text_is_announced_and_motion_can_be_turned_off(
    browser: Browser, bridge: Bridge, session_id: str
) -> None:
    context = browser.new_context(reduced_motion="reduce")
    try:
        tab = context.new_page()
        tab.goto(bridge.token(session_id)["pay_url"])
        assert tab.locator("[aria-live=polite]").count() == 1
        expect(tab.get_by_role("status")).to_contain_text("This page moves on by itself")
        animation = tab.evaluate(
            "getComputedStyle(document.querySelector('.spinner')).animationName"
        )
        assert animation == "none"
    finally:
        context.close()


def test_continue_on_your_phone_the_step_open_elsewhere_and_an_in_app_browser(
    browser: Browser,
    page: Page,
    bridge: Bridge,
    bank: Bank,
    session_id: str,
    screenshots: Path,
) -> None:
    token = bridge.token(session_id)
    page.goto(token["pay_url"])
    page.click("[data-bridge-action=continue-on-phone]")
    expect(page.locator("#phone-qr")).to_be_visible()
    page.screenshot(path=screenshots / "phone.png")
    fits_a_phone(page)
    bridge.send(webhook("action_required", session_id, interaction=bank_step(bank)))
    page.wait_for_url(f"{bank.url}/**")
    second = page.context.new_page()
    second.goto(token["pay_url"])
    expect(second.locator("#step-elsewhere")).to_be_visible()
    second.screenshot(path=screenshots / "open-elsewhere.png")
    fits_a_phone(second)
    context = browser.new_context(
        user_agent=SAMPLES[0][1], viewport={"width": 390, "height": 800}, is_mobile=True
    )
    in_app = f"{session_id}_app"  # a session of its own: the one above is held elsewhere
    bridge.send(webhook("action_required", in_app, interaction=bank_step(bank)))
    try:
        app = context.new_page()
        app.goto(bridge.token(in_app)["pay_url"])
        expect(app.locator("#in-app")).to_be_visible()
        app.screenshot(path=screenshots / "in-app.png")
        fits_a_phone(app)
    finally:
        context.close()
