"""The embedding script on a partner's checkout page: iframe, popup and redirect, in Chromium.

The partner's page is on an origin of its own (another loopback port), like a real shop's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Frame, Locator, Page, Request, expect

from ..payloads import redirect, webhook
from .conftest import Console, customer_context
from .harness import Bank, Bridge, Partner, wait_until

FRAME = "iframe[data-redirect-bridge]"
LAST_IS_COMPLETE = "() => { const e = window.events.at(-1); return !!e && e[0] === 'complete'; }"


def action_required(bridge: Bridge, bank: Bank, session_id: str, token: dict[str, Any]) -> None:
    """The provider asks for the bank step; the bank sends the customer back to the bridge."""
    url = f"{bank.url}/acs/challenge"
    params = {"PaReq": "p", "MD": "m", "TermUrl": token["return_url"]}
    interaction = redirect(url=url, base_url=url, params=params)
    bridge.send(webhook("action_required", session_id, interaction=interaction))


def finished(bridge: Bridge, session_id: str) -> None:
    bridge.send(webhook("payment_finished", session_id, session_status="accepted"))


def embedded(token: dict[str, Any], partner: Partner) -> str:
    """The pay URL as the script opens it: it tells the page who embeds it."""
    return f"{token['pay_url']}?embedder={quote(partner.url, safe='')}"


def events(page: Page) -> list[list[str]]:
    return page.evaluate("window.events")


def wait_for_event(page: Page, kind: str, value: str) -> None:
    page.wait_for_function(
        "([kind, value]) => window.events.some(e => e[0] === kind && e[1] === value)",
        arg=[kind, value],
        timeout=5000,
    )


def pump_until(page: Page, check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Like ``wait_until``, for what Playwright reports by events: it hands them over only
    while it is called, so this waits in the browser's time rather than with a plain sleep."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        page.wait_for_timeout(20)


def status_requests(page: Page) -> list[str]:
    """Status API requests the partner's own document makes (not the bridge's framed pages)."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if "/api/v1/status/" in request.url and request.frame == page.main_frame:
            seen.append(request.url)

    page.on("request", record)
    return seen


def following(page: Page, requests: list[str], bridge: Bridge) -> int:
    """Wait until the script is long-polling after the framed page's hello; how many so far.

    The script looks at once (a plain request, then a long-poll) when it starts and on every
    hello from a bridge page (each page says one on load): the count is stable once there is
    one plain request per such reason and a long-poll after the last of them.
    """
    page.wait_for_function(
        "origin => window.messages.some(m => m.origin === origin)", arg=bridge.url, timeout=5000
    )
    hellos = page.evaluate(
        "origin => window.messages.filter(m => m.origin === origin).length", bridge.url
    )

    def settled() -> bool:
        plain = [url for url in requests if "?wait=" not in url]
        return len(plain) == 1 + hellos and "?wait=" in requests[-1]

    pump_until(page, settled)
    return len(requests)


def bridge_frame(page: Page) -> Frame:
    handle = page.locator(FRAME).element_handle()
    frame = handle.content_frame() if handle is not None else None
    assert frame is not None
    return frame


def heading(page: Page) -> Locator:
    return page.frame_locator(FRAME).get_by_role("heading")


# --- iframe -------------------------------------------------------------------------------------


def test_iframe_journey_from_a_listed_origin(
    page: Page, partner: Partner, embedding_bridge: Bridge, bank: Bank, session_id: str
) -> None:
    bridge = embedding_bridge
    token = bridge.token(session_id)
    to_bank: list[Request] = []
    page.on("request", lambda r: to_bank.append(r) if r.url.startswith(bank.url) else None)
    page.goto(partner.checkout(bridge, status_url=token["status_url"], mode="iframe"))
    page.click("#pay")

    expect(page.locator(f"#bank-step > {FRAME}")).to_have_attribute("src", embedded(token, partner))
    expect(heading(page)).to_have_text("Preparing your payment")
    assert bridge_frame(page).url == embedded(token, partner)
    wait_for_event(page, "status", "pending")

    action_required(bridge, bank, session_id, token)
    expect(heading(page)).to_have_text("Bank challenge", timeout=5000)
    wait_until(lambda: len(bank.posts()) == 1)
    assert bank.posts()[0].method == "POST"
    assert bank.posts()[0].fields == [("PaReq", "p"), ("MD", "m"), ("TermUrl", token["return_url"])]
    posted = [r for r in to_bank if r.method == "POST"]
    assert len(posted) == 1
    assert posted[0].frame.parent_frame == page.main_frame  # from within the iframe
    assert page.url.startswith(partner.url)  # the checkout page itself stayed put

    page.frame_locator(FRAME).locator("#complete").click()
    expect(heading(page)).to_have_text("Checking the result")
    assert bridge_frame(page).url == token["return_url"]
    assert len(bank.posts()) == 1

    finished(bridge, session_id)
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    seen = events(page)
    assert seen[-1] == ["complete", "succeeded"]
    assert ["status", "action_required"] in seen[:-1]
    assert not [event for event in seen if event[0] == "error"]
    expect(page.locator("iframe")).to_have_count(0)
    messages = page.evaluate("window.messages")
    from_bridge = [m for m in messages if m["origin"] == bridge.url]
    assert from_bridge, messages
    assert all(m["data"]["source"] == "redirect-bridge" for m in from_bridge)
    assert all(m["data"]["type"] == "status" for m in from_bridge)


@pytest.mark.parametrize("size", ["250x400", "390x400", "500x600", "600x400", "full"])
def test_iframe_sizes(
    page: Page, partner: Partner, embedding_bridge: Bridge, session_id: str, size: str
) -> None:
    token = embedding_bridge.token(session_id)
    page.goto(partner.checkout(embedding_bridge, status_url=token["status_url"], size=size))
    page.click("#pay")
    expect(heading(page)).to_have_text("Preparing your payment")
    iframe = page.locator(FRAME)
    box = iframe.bounding_box()
    assert box is not None
    if size == "full":
        viewport = page.viewport_size
        assert viewport is not None
        assert box == {"x": 0, "y": 0, "width": viewport["width"], "height": viewport["height"]}
        on_top = (
            "([x, y]) => document.elementFromPoint(x, y).matches('iframe[data-redirect-bridge]')"
        )
        for point in ([1, 1], [viewport["width"] - 1, viewport["height"] - 1]):
            assert page.evaluate(on_top, point), point
    else:
        width, height = (int(n) for n in size.split("x"))
        expect(iframe).to_have_attribute("width", str(width))
        expect(iframe).to_have_attribute("height", str(height))
        assert (box["width"], box["height"]) == (width, height)
        expect(page.locator(f"#bank-step > {FRAME}")).to_have_count(1)


def test_an_unlisted_origin_cannot_frame_the_bridge(
    page: Page,
    stranger: Partner,
    partner: Partner,
    embedding_bridge: Bridge,
    session_id: str,
    console: Console,
) -> None:
    bridge = embedding_bridge
    refusal = (
        f"Framing '{bridge.url}/' violates the following Content Security Policy directive: "
        f'"frame-ancestors {partner.url}". The request has been blocked.'
    )
    console.expect_message(refusal)
    token = bridge.token(session_id)
    page.goto(stranger.checkout(bridge, status_url=token["status_url"], hello="1500"))
    page.click("#pay")
    expect(page.locator(FRAME)).to_have_attribute("src", embedded(token, stranger))
    pump_until(page, lambda: console.logged(refusal))
    assert bridge_frame(page).url != embedded(token, stranger)
    expect(heading(page)).to_have_count(0)
    assert page.evaluate("window.messages") == []
    refused = [entry for entry in console.messages if refusal in entry[1]]
    assert [entry[0] for entry in refused] == ["error"]
    # The partner hears of it: a refused frame never greets its embedder.
    wait_for_event(page, "error", "frame_blocked")


def test_a_listed_origin_is_never_told_its_frame_was_blocked(
    page: Page, partner: Partner, embedding_bridge: Bridge, session_id: str
) -> None:
    token = embedding_bridge.token(session_id)
    page.goto(partner.checkout(embedding_bridge, status_url=token["status_url"], hello="1500"))
    page.click("#pay")
    wait_for_event(page, "status", "pending")
    page.wait_for_timeout(2000)
    assert ["error", "frame_blocked"] not in events(page)


def test_the_script_follows_the_event_stream_by_default(
    page: Page, partner: Partner, embedding_bridge: Bridge, session_id: str
) -> None:
    requests = status_requests(page)
    token = embedding_bridge.token(session_id)
    page.goto(partner.checkout(embedding_bridge, status_url=token["status_url"]))
    page.click("#pay")
    wait_for_event(page, "status", "pending")
    finished(embedding_bridge, session_id)
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    assert events(page)[-1] == ["complete", "succeeded"]
    assert any(url.endswith("/events") for url in requests)
    assert not any("?wait=" in url for url in requests)  # no long-poll was needed


# --- popup and redirect ------------------------------------------------------------------------


def open_popup(
    page: Page, partner: Partner, bridge: Bridge, session_id: str
) -> tuple[dict[str, Any], Page]:
    """The partner's checkout in popup mode, its button pressed: the token and the popup,
    showing the bridge's first page."""
    token = bridge.token(session_id)
    page.goto(partner.checkout(bridge, status_url=token["status_url"], mode="popup"))
    with page.expect_popup() as opened:
        page.click("#pay")
    popup = opened.value
    expect(popup.get_by_role("heading")).to_have_text("Preparing your payment")
    return token, popup


def test_popup_journey(
    page: Page, partner: Partner, embedding_bridge: Bridge, bank: Bank, session_id: str
) -> None:
    bridge = embedding_bridge
    token, popup = open_popup(page, partner, bridge, session_id)
    assert popup.url == embedded(token, partner)
    expect(page.locator("iframe")).to_have_count(0)
    wait_for_event(page, "status", "pending")

    action_required(bridge, bank, session_id, token)
    popup.wait_for_url(f"{bank.url}/acs/challenge?foo=bar", timeout=5000)
    wait_until(lambda: len(bank.posts()) == 1)
    popup.click("#complete")
    popup.wait_for_url(token["return_url"])
    expect(popup.get_by_role("heading")).to_have_text("Checking the result")

    with popup.expect_event("close", timeout=5000):
        finished(bridge, session_id)
    assert popup.is_closed()
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    seen = events(page)
    assert seen[-1] == ["complete", "succeeded"]
    assert ["status", "action_required"] in seen[:-1]
    assert not [event for event in seen if event[0] == "error"]
    assert len(bank.posts()) == 1


def test_a_popup_the_customer_closes_is_reported_and_followed_on(
    page: Page, partner: Partner, embedding_bridge: Bridge, session_id: str
) -> None:
    bridge = embedding_bridge
    _, popup = open_popup(page, partner, bridge, session_id)
    wait_for_event(page, "status", "pending")
    popup.close()
    wait_for_event(page, "error", "popup_closed")
    finished(bridge, session_id)  # the outcome still arrives (the payment may have gone through)
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    assert events(page) == [
        ["status", "pending"],
        ["error", "popup_closed"],
        ["status", "succeeded"],
        ["complete", "succeeded"],
    ]


def test_a_blocked_popup_falls_back_to_a_redirect(
    popup_blocking_browser: Browser, partner: Partner, embedding_bridge: Bridge, session_id: str
) -> None:
    console = Console()
    context = customer_context(popup_blocking_browser, console)
    tab = context.new_page()
    token = embedding_bridge.token(session_id)
    # Started while the page loads: no user gesture (Playwright's page.evaluate carries one,
    # with which Chromium lets the popup open).
    checkout = partner.checkout(
        embedding_bridge, status_url=token["status_url"], mode="popup", autostart="1"
    )
    tab.goto(checkout, wait_until="commit")
    tab.wait_for_url(token["pay_url"], timeout=5000)
    expect(tab.get_by_role("heading")).to_have_text("Preparing your payment")
    assert context.pages == [tab]  # no popup was opened
    context.close()
    assert console.problems() == []


def test_redirect_mode_takes_the_whole_page(
    page: Page, partner: Partner, embedding_bridge: Bridge, session_id: str
) -> None:
    token = embedding_bridge.token(session_id)
    page.goto(partner.checkout(embedding_bridge, status_url=token["status_url"], mode="redirect"))
    page.click("#pay")
    page.wait_for_url(token["pay_url"], timeout=5000)
    expect(page.get_by_role("heading")).to_have_text("Preparing your payment")
    assert len(page.context.pages) == 1


# --- what the script trusts, stopping, errors ------------------------------------------------


def test_messages_from_other_origins_are_ignored(
    page: Page, partner: Partner, embedding_bridge: Bridge, session_id: str
) -> None:
    bridge = embedding_bridge
    token = bridge.token(session_id)
    requests = status_requests(page)
    page.goto(partner.checkout(bridge, status_url=token["status_url"], transport="poll"))
    page.click("#pay")
    wait_for_event(page, "status", "pending")
    count = following(page, requests, bridge)

    forged = {"source": "redirect-bridge", "type": "status", "status": "succeeded", "final": True}
    page.evaluate("message => window.postMessage(message, '*')", forged)
    page.wait_for_function(  # it was delivered
        "origin => window.messages.some(m => m.origin === origin)", arg=partner.url
    )
    assert page.evaluate("window.messages.at(-1)") == {"origin": partner.url, "data": forged}
    page.wait_for_timeout(500)
    assert len(requests) == count
    assert events(page) == [["status", "pending"]]
    expect(page.locator(FRAME)).to_have_count(1)

    # The same words from the bridge's own page (it says them on every load) do make it look.
    bridge_frame(page).goto(token["pay_url"])
    pump_until(page, lambda: any("?wait=" not in url for url in requests[count:]))

    finished(bridge, session_id)
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    assert events(page)[-1] == ["complete", "succeeded"]
    expect(page.locator(FRAME)).to_have_count(0)


def test_messages_from_the_frame_at_another_origin_are_ignored(
    page: Page, partner: Partner, embedding_bridge: Bridge, bank: Bank, session_id: str
) -> None:
    """Once the frame is at the bank, what the bank's page posts is not the bridge talking."""
    bridge = embedding_bridge
    token = bridge.token(session_id)
    action_required(bridge, bank, session_id, token)
    requests = status_requests(page)
    page.goto(partner.checkout(bridge, status_url=token["status_url"], transport="poll"))
    page.click("#pay")
    expect(heading(page)).to_have_text("Bank challenge", timeout=5000)
    wait_for_event(page, "status", "action_required")
    count = following(page, requests, bridge)

    forged = {"source": "redirect-bridge", "type": "status", "status": "succeeded", "final": True}
    at_bank = bridge_frame(page)
    assert at_bank.url.startswith(bank.url)
    at_bank.evaluate("message => window.parent.postMessage(message, '*')", forged)
    page.wait_for_function(
        "origin => window.messages.some(m => m.origin === origin)", arg=bank.url, timeout=5000
    )
    page.wait_for_timeout(500)
    assert len(requests) == count
    assert events(page) == [["status", "action_required"]]

    finished(bridge, session_id)
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    assert events(page)[-1] == ["complete", "succeeded"]


def test_stop_removes_the_frame_and_stops_following(
    page: Page, partner: Partner, embedding_bridge: Bridge, bank: Bank, session_id: str
) -> None:
    bridge = embedding_bridge
    token = bridge.token(session_id)
    requests = status_requests(page)
    page.goto(partner.checkout(bridge, status_url=token["status_url"], transport="poll"))
    page.click("#pay")
    wait_for_event(page, "status", "pending")
    count = following(page, requests, bridge)

    page.evaluate("window.flow.stop()")
    expect(page.locator("iframe")).to_have_count(0)
    action_required(bridge, bank, session_id, token)  # a change a following script would see
    assert bridge.status(token["token"])["status"] == "action_required"
    page.wait_for_timeout(700)
    assert len(requests) == count
    assert events(page) == [["status", "pending"]]
    assert bank.posts() == []


def test_a_bad_token_reports_not_found(
    page: Page, partner: Partner, embedding_bridge: Bridge, console: Console
) -> None:
    console.expect_status(404)
    status_url = f"{embedding_bridge.url}/api/v1/status/not-a-real-token"
    page.goto(partner.checkout(embedding_bridge, status_url=status_url))
    page.click("#pay")
    wait_for_event(page, "error", "not_found")
    assert events(page) == [["error", "not_found"]]
    expect(page.locator("iframe")).to_have_count(0)


# --- the script pinned ----------------------------------------------------------------------


def test_the_pinned_script_runs_only_with_its_published_integrity(
    page: Page, partner: Partner, embedding_bridge: Bridge, session_id: str, console: Console
) -> None:
    """The README's tag (a versioned URL, ``integrity``, ``crossorigin``) works from another
    origin, and Chromium refuses the script when its bytes are not the ones pinned."""
    import base64
    import hashlib
    import urllib.request
    from importlib.metadata import version

    bridge = embedding_bridge
    pinned = version("redirect-bridge")
    with urllib.request.urlopen(f"{bridge.url}/static/js/redirect-bridge-{pinned}.js") as answer:
        body = answer.read()
    published = "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
    token = bridge.token(session_id)
    options = {"status_url": token["status_url"], "mode": "popup", "pinned": pinned}
    page.goto(partner.checkout(bridge, **options, integrity=published))
    assert page.evaluate("typeof window.RedirectBridge") == "object"
    wrong = "sha384-" + base64.b64encode(hashlib.sha384(body + b" ").digest()).decode()
    console.expect_message("Failed to find a valid digest in the 'integrity' attribute")
    console.expect_message("RedirectBridge is not defined")
    page.goto(partner.checkout(bridge, **options, integrity=wrong))
    assert page.evaluate("typeof window.RedirectBridge") == "undefined"
