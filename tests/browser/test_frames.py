"""Refused frames in ``iframe`` mode, in Chromium with its popup blocker on, as customers have
it: the step reaches the bank in a window and finishes, a bank that allows frames stays framed,
and a shop that may not frame the bridge hears of it.

Each test has banks of its own (each its own origin), since the bridge remembers what it
learns of an origin; each counts what the bank received: one live step, never a double post.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from ..payloads import redirect, webhook
from .conftest import CHROMIUM, CHROMIUM_ARGS, Console
from .harness import Bank, Bridge, Partner, ServerThread, wait_until

FRAME = "iframe[data-redirect-bridge]"
OPEN_WINDOW = "[data-bridge-action=open-window]"
# Chromium's console line for a frame the bank refused (scripts cannot read it).
REFUSED = "in a frame because it set 'X-Frame-Options' to 'deny'"
LAST_IS_COMPLETE = "() => { const e = window.events.at(-1); return !!e && e[0] === 'complete'; }"


@pytest.fixture(scope="module")
def browser(browser: Browser) -> Iterator[Browser]:
    """Chromium with its popup blocker on, for every page here (Playwright launches it with
    ``--disable-popup-blocking``; leaving that default out keeps the blocker)."""
    launched = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        ignore_default_args=["--disable-popup-blocking"],
    )
    yield launched
    launched.close()


@pytest.fixture
def new_bank(servers: ServerThread) -> Callable[[str], Bank]:
    """A fake bank on an origin of its own: ``refuse`` as :class:`Bank` takes it."""

    def make(refuse: str) -> Bank:
        bank = Bank(refuse=refuse)
        bank.url = servers.serve(bank.app())
        return bank

    return make


@pytest.fixture
def shop_bridge(bridge_factory: Callable[..., Bridge], partner: Partner) -> Bridge:
    """A bridge that lets ``partner`` frame it and sends customers back to its shop."""
    return bridge_factory(FRAME_ANCESTORS=partner.url, RETURN_URL=f"{partner.url}/done")


@dataclass
class Step:
    """One customer's bank step from the shop's checkout in iframe mode, at a bank of its own."""

    tab: Page
    partner: Partner
    bridge: Bridge
    bank: Bank
    token: dict[str, Any]
    session_id: str
    reports: list[Any] = field(default_factory=list)  # what the bridge's pages reported

    def __post_init__(self) -> None:
        def record(request: Request) -> None:
            if request.method == "POST" and request.url.endswith("/browser"):
                self.reports.append(request.post_data_json)

        self.tab.context.on("request", record)

    @property
    def fallbacks(self) -> list[Any]:
        """The reports that the step went to a window (every form sent reports ``bank`` too)."""
        return [report for report in self.reports if report["event"] == "fallback"]

    def history(self) -> list[dict[str, Any]]:
        """The session's ``browser`` events, as the partner reads them."""
        answer = self.bridge.call(
            "GET",
            f"/api/v1/sessions/{self.session_id}/events",
            headers={"Authorization": f"Bearer {self.bridge.api_key}"},
        )
        events = json.loads(answer.body)["events"]
        return [event for event in events if event["kind"] == "browser"]

    def instructed(self, looked: str | None = None) -> None:
        """The provider asks for the bank step; with ``looked``, wait until the bridge has
        looked at the bank's headers and kept what they said (``refused``, ``allowed``)."""
        before = looks(self.bridge, looked) if looked else 0.0
        url = f"{self.bank.url}/acs/challenge"
        params = {"PaReq": "p", "MD": "m", "TermUrl": self.token["return_url"]}
        interaction = redirect(url=url, base_url=url, params=params)
        self.bridge.send(webhook("action_required", self.session_id, interaction=interaction))
        if looked:
            wait_until(lambda: looks(self.bridge, looked) > before)
            assert [(look.path, look.query, look.body) for look in self.bank.looks] == [
                ("/", "", b"")
            ]

    def checkout(self, **options: str) -> None:
        status_url = self.token["status_url"]
        self.tab.goto(self.partner.checkout(self.bridge, status_url=status_url, **options))
        self.tab.click("#pay")

    def finished(self) -> None:
        self.bridge.send(webhook("payment_finished", self.session_id, session_status="accepted"))

    def finish_in_popup(self, popup: Page) -> None:
        """The customer completes the challenge in the popup; the shop's page hears the end."""
        expect(popup.get_by_role("heading")).to_have_text("Bank challenge", timeout=5000)
        assert popup.url.startswith(self.bank.url)
        expect(self.tab.locator(FRAME)).to_have_count(0)
        expect(self.tab.locator(OPEN_WINDOW)).to_have_count(0)
        popup.click("#complete")
        with popup.expect_event("close", timeout=5000):
            self.finished()
        self.tab.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
        assert self.tab.evaluate("window.events.at(-1)") == ["complete", "succeeded"]
        assert self.tab.evaluate("window.flow.mode") == "popup"

    def finish_in_page(self, went: list[str], window: str) -> None:
        """The whole tab went to the bank step as ``window``; the customer completes it and
        arrives back at the shop with the outcome."""
        expect(self.tab.get_by_role("heading")).to_have_text("Bank challenge", timeout=5000)
        assert f"{self.token['pay_url']}?{window}" in went
        assert self.tab.context.pages == [self.tab]
        self.tab.click("#complete")
        expect(self.tab.get_by_role("heading")).to_have_text("Checking the result")
        self.finished()
        done = re.escape(f"{self.partner.url}/done?") + ".*status=succeeded"
        self.tab.wait_for_url(re.compile(done))
        assert self.bridge.status(self.token["token"])["status"] == "succeeded"

    def posts(self) -> int:
        return len([arrival for arrival in self.bank.posts() if arrival.method == "POST"])

    def top_urls(self) -> list[str]:
        """Every URL the tab's own document goes to from now on (a page that goes on at once
        cannot be waited for)."""
        seen: list[str] = []
        main = self.tab.main_frame
        self.tab.on(
            "framenavigated", lambda frame: seen.append(frame.url) if frame == main else None
        )
        return seen


@pytest.fixture
def step_at(
    page: Page,
    partner: Partner,
    shop_bridge: Bridge,
    new_bank: Callable[[str], Bank],
    session_id: str,
    console: Console,
) -> Callable[[str], Step]:
    """A step at a new bank refusing as :class:`Bank` takes it."""
    console.expect_message(REFUSED)

    def make(refuse: str) -> Step:
        token = shop_bridge.token(session_id)
        return Step(page, partner, shop_bridge, new_bank(refuse), token, session_id)

    return make


def looks(bridge: Bridge, frames: str) -> float:
    found = re.search(
        rf'bridge_bank_looks_total{{frames="{frames}"}} (\S+)', bridge.get("/metrics").decode()
    )
    return float(found[1]) if found else 0.0


def test_the_popup_blocker_is_on(page: Page, partner: Partner) -> None:
    """A window.open without a user gesture opens nothing in these tests' Chromium."""
    page.add_init_script("window.openedAtLoad = window.open('about:blank') !== null")
    page.goto(f"{partner.url}/done")
    assert page.evaluate("window.openedAtLoad") is False
    assert page.context.pages == [page]


def test_a_bank_known_to_refuse_frames_gets_the_whole_page_at_once(
    step_at: Callable[[str], Step],
) -> None:
    step = step_at("every")
    step.instructed(looked="refused")
    went = step.top_urls()
    step.checkout()
    step.finish_in_page(went, "window=page&after=known&take=1")
    assert step.posts() == 1  # the frame held its form back: the window's is the one step
    assert step.fallbacks == [{"event": "fallback", "mode": "page"}]
    # The form went once, from the window; its two reports are sent together, in either order.
    told = sorted((event["event"], event["mode"]) for event in step.history())
    assert told == [("bank", "page"), ("fallback", "page")]


def test_a_known_refusal_offers_a_popup_at_once_when_the_shop_prefers_it(
    step_at: Callable[[str], Step],
) -> None:
    step = step_at("every")
    step.instructed(looked="refused")
    step.checkout(fallback="popup", size="full")  # the button comes above a frame on top
    button = step.tab.locator(f"{FRAME} + {OPEN_WINDOW}")
    expect(button).to_have_text("Bank page not showing? Open it in a new window")
    expect(step.tab.frame_locator(FRAME).locator("#bank-window")).to_be_visible()
    assert step.posts() == 0
    with step.tab.expect_popup() as opened:
        button.click()
    step.finish_in_popup(opened.value)
    assert step.posts() == 1
    assert step.fallbacks == [{"event": "fallback", "mode": "popup"}]


def test_a_page_embedded_by_an_older_script_offers_the_window_itself(
    step_at: Callable[[str], Step],
) -> None:
    """The script pinned before windows existed cannot move the step: the bridge's page in the
    frame neither posts into a refusal nor strands the customer, but links to the window."""
    step = step_at("every")
    step.instructed(looked="refused")
    step.checkout(pinned="0.1.0")
    link = step.tab.frame_locator(FRAME).locator("#bank-window a")
    expect(link).to_have_text("Continue to your bank")
    expect(step.tab.locator(OPEN_WINDOW)).to_have_count(0)
    assert step.posts() == 0
    went = step.top_urls()
    link.click()
    step.finish_in_page(went, "window=page&after=known&take=1")
    assert step.posts() == 1
    assert step.fallbacks == [{"event": "fallback", "mode": "page"}]


def test_a_refused_form_answer_is_offered_a_window_within_15_seconds(
    step_at: Callable[[str], Step], console: Console, screenshots: Path
) -> None:
    """The bank's root allows frames, its form's answer does not: nothing can know in advance,
    so the button comes, by default, no later than 15 s after the form went."""
    step = step_at("form")
    step.instructed(looked="allowed")
    step.tab.clock.install()
    step.checkout(size="390x400")  # the customer's phone
    wait_until(lambda: step.posts() == 1)
    button = step.tab.locator(f"{FRAME} + {OPEN_WINDOW}")
    seconds_later(step.tab, 15)
    expect(button).to_be_visible(timeout=2000)
    step.tab.clock.resume()
    assert console.logged(REFUSED)
    expect(button).to_have_text("Bank page not showing? Open it in a new window")
    step.tab.screenshot(path=str(screenshots / "refused-frame.png"))
    with step.tab.expect_popup() as opened:
        button.click()
    step.finish_in_popup(opened.value)
    assert step.posts() == 2  # the frame's, refused, and the window's: the one live step
    assert step.fallbacks == [{"event": "fallback", "mode": "popup"}]


def test_with_popups_blocked_the_click_takes_the_whole_page(
    step_at: Callable[[str], Step],
) -> None:
    step = step_at("form")
    step.instructed()
    step.tab.add_init_script("window.open = function () { return null; }")  # every one blocked
    step.checkout(stall="1500")
    button = step.tab.locator(f"{FRAME} + {OPEN_WINDOW}")
    expect(button).to_be_visible(timeout=10000)
    went = step.top_urls()
    button.click()
    step.finish_in_page(went, "window=page&after=stall&take=1")
    assert step.posts() == 2
    assert step.fallbacks == [{"event": "fallback", "mode": "page"}]


def test_a_bank_that_allows_frames_stays_framed(
    browser: Browser,
    step_at: Callable[[str], Step],
    console: Console,
) -> None:
    """Nothing moves by itself: the offer of a window may come, in the customer's language,
    and goes once the step is back in the frame."""
    context = browser.new_context(locale="ru-RU")
    context.on("page", console.watch)
    step = replace(step_at(""), tab=context.new_page())
    step.instructed()
    step.checkout(stall="1500")
    frame = step.tab.frame_locator(FRAME)
    expect(frame.get_by_role("heading")).to_have_text("Bank challenge", timeout=5000)
    button = step.tab.locator(f"{FRAME} + {OPEN_WINDOW}")
    expect(button).to_have_text("Страница банка не открылась? Откройте её в новом окне")
    step.tab.wait_for_timeout(1000)
    expect(frame.get_by_role("heading")).to_have_text("Bank challenge")
    assert context.pages == [step.tab] and step.tab.url.startswith(step.partner.url)
    assert step.posts() == 1
    frame.locator("#complete").click()
    expect(button).to_have_count(0)
    step.finished()
    step.tab.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    assert step.tab.evaluate("window.events.at(-1)") == ["complete", "succeeded"]
    assert step.posts() == 1
    assert step.fallbacks == []  # no fallback
    context.close()


def test_frame_blocked_is_reported_within_15_seconds(
    page: Page,
    stranger: Partner,
    shop_bridge: Bridge,
    session_id: str,
    console: Console,
) -> None:
    console.expect_message("violates the following Content Security Policy directive")
    token = shop_bridge.token(session_id)
    page.clock.install()
    page.goto(stranger.checkout(shop_bridge, status_url=token["status_url"]))
    page.click("#pay")
    seconds_later(page, 15)
    page.wait_for_function(
        "window.events.some(e => e[0] === 'error' && e[1] === 'frame_blocked')", timeout=2000
    )


def seconds_later(page: Page, seconds: int) -> None:
    """The page's clock (Playwright's, installed before it loaded) ``seconds`` on from now, its
    timers fired on the way, and then stopped: what the page does by then, without the wait.
    It stands still until resumed. (It stops a second on, a time surely still ahead.)"""
    now = page.evaluate("Date.now()")
    page.clock.pause_at(now / 1000 + 1)
    page.clock.run_for((seconds - 1) * 1000)


MEASURE = """async url => {
  const frame = document.createElement("iframe");
  const started = performance.now();
  const loaded = new Promise(resolve => frame.addEventListener("load", resolve, { once: true }));
  frame.src = url;
  document.body.appendChild(frame);
  await loaded;
  let location = "readable";
  try { frame.contentWindow.location.href; } catch (error) { location = error.name; }
  const seen = {
    load_ms: Math.round(performance.now() - started),
    content_document: frame.contentDocument === null ? "null" : "a document",
    location: location,
    frames: frame.contentWindow.frames.length,
  };
  frame.remove();
  return seen;
}"""


def test_what_a_parent_page_sees_of_a_refused_frame(
    page: Page, partner: Partner, new_bank: Callable[[str], Bank], console: Console
) -> None:
    """The README's account, measured: a refused frame fires ``load`` like one that loaded,
    and shows its parent the same nothing (the console alone says why)."""
    console.expect_message(REFUSED)
    page.goto(f"{partner.url}/done")
    refused = page.evaluate(MEASURE, f"{new_bank('every').url}/acs/challenge")
    allowed = page.evaluate(MEASURE, f"{new_bank('').url}/acs/challenge")
    assert console.logged(REFUSED)
    for seen in (refused, allowed):
        assert {key: seen[key] for key in ("content_document", "location", "frames")} == {
            "content_document": "null",
            "location": "SecurityError",
            "frames": 0,
        }
    assert refused["load_ms"] < 2000 and allowed["load_ms"] < 2000
