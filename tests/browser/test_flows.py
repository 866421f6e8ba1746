"""Smart Glocal's documented orders of webhooks, lived through by a customer in Chromium.

- Confirm first (one-time card payments with card data, customer-initiated recurring):
  ``ready_to_confirm`` → the partner confirms → ``action_required`` → ``payment_finished``.
- Two-stage (hold, then capture): ``ready_to_confirm`` → ``action_required`` →
  ``ready_to_capture`` (the customer's part is over: ``authorized``) → the partner captures →
  ``payment_finished``.

Each in a full redirect (the customer's tab on ``/pay/{token}``) and in the embedding script's
iframe. Every webhook is newer than the one before by the provider's clock (``session.updated_at``),
as the provider sends them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from ..payloads import redirect, webhook
from .harness import Bank, Bridge, Partner, wait_until
from .test_embedding import FRAME, LAST_IS_COMPLETE, bridge_frame, events, heading, wait_for_event

# The provider's clock: each webhook one second after the one before.
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Provider:
    """Smart Glocal for one session: signs and sends its webhooks, each newer than the last."""

    def __init__(self, bridge: Bridge, session_id: str) -> None:
        self.bridge = bridge
        self.session_id = session_id
        self.sent = 0

    def send(self, kind: str, **fields: Any) -> None:
        self.sent += 1
        moment = START + timedelta(seconds=self.sent)
        updated_at = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.bridge.send(webhook(kind, self.session_id, updated_at=updated_at, **fields))

    def confirm_first(self) -> None:
        """``ready_to_confirm``: the provider waits for the partner's ``session/confirm``."""
        self.send("ready_to_confirm", next_action="confirm")

    def bank_step(self, bank: Bank, fields: dict[str, str]) -> None:
        """After the partner confirmed: the bank's 3-D Secure page, by a POST redirect."""
        url = f"{bank.url}/acs/challenge"
        interaction = redirect(url=f"{url}?foo=bar", base_url=url, params=fields)
        self.send("action_required", interaction=interaction)

    def held(self) -> None:
        """``ready_to_capture``: the bank approved, the money is held for the partner."""
        self.send("ready_to_capture", next_action="capture")

    def finished(self) -> None:
        self.send("payment_finished", session_status="accepted")


def bank_fields(token: dict[str, Any]) -> dict[str, str]:
    """What the bank is sent, its way back to the bridge included."""
    return {"PaReq": "eJxVUttuozAQ/RXEc8OYSxKSmQ+", "MD": "md-7f3a", "TermUrl": token["return_url"]}


def reached_the_bank(bank: Bank, fields: dict[str, str]) -> None:
    """The bank got one POST, with its query string kept and exactly the fields sent."""
    wait_until(lambda: len(bank.posts()) == 1)
    arrival = bank.posts()[0]
    assert (arrival.method, arrival.path, arrival.query) == ("POST", "/acs/challenge", "foo=bar")
    assert arrival.fields == list(fields.items())


def session_answer(bridge: Bridge, session_id: str) -> dict[str, Any]:
    """What the partner's backend reads of the session."""
    headers = {"Authorization": f"Bearer {bridge.api_key}"}
    status, _, body = bridge.call("GET", f"/api/v1/sessions/{session_id}", None, headers)
    assert status == 200, body[:200]
    return json.loads(body)


def back_at_the_shop(page: Page, partner: Partner, session_id: str, status: str) -> None:
    """The customer is on the partner's return URL, which carries the outcome."""
    page.wait_for_url(f"{partner.url}/done?**", timeout=5000)
    expect(page.get_by_role("heading")).to_have_text("Back at the shop")
    query = parse_qs(urlsplit(page.url).query)
    assert query["order"] == ["7"]  # what the partner's URL already carried
    assert query["session_id"] == [session_id]
    assert query["status"] == [status]


# --- full redirect: the customer's own tab on /pay/{token} ----------------------------------


@pytest.fixture(params=[False, True], ids=["outcome-page", "return-url"])
def redirect_bridge(
    request: pytest.FixtureRequest, bridge_factory: Callable[..., Bridge], partner: Partner
) -> tuple[Bridge, bool]:
    """A bridge without BRIDGE_RETURN_URL (its own outcome page), or with one at the shop."""
    if request.param:
        return bridge_factory(RETURN_URL=f"{partner.url}/done?order=7"), True
    return bridge_factory(), False


def confirmed_to_the_bank_and_back(
    page: Page, bridge: Bridge, bank: Bank, provider: Provider, token: dict[str, Any]
) -> None:
    """Waiting, confirming, the bank by itself, and back on the bridge's return page."""
    page.goto(token["pay_url"])
    expect(page.get_by_role("heading")).to_have_text("Preparing your payment")

    provider.confirm_first()
    expect(page.get_by_role("heading")).to_have_text("Confirming your payment", timeout=5000)
    assert page.url == token["pay_url"]
    assert bank.posts() == []

    fields = bank_fields(token)
    provider.bank_step(bank, fields)  # the partner confirmed; the bank asks for the customer
    page.wait_for_url(f"{bank.url}/acs/challenge?foo=bar", timeout=5000)
    reached_the_bank(bank, fields)

    page.click("#complete")
    page.wait_for_url(token["return_url"])
    expect(page.get_by_role("heading")).to_have_text("Checking the result")
    assert bridge.status(token["token"])["status"] == "action_required"


def test_confirm_first_journey(
    page: Page,
    redirect_bridge: tuple[Bridge, bool],
    partner: Partner,
    bank: Bank,
    session_id: str,
) -> None:
    bridge, onward = redirect_bridge
    token = bridge.token(session_id)
    provider = Provider(bridge, session_id)
    confirmed_to_the_bank_and_back(page, bridge, bank, provider, token)

    provider.finished()
    if onward:
        back_at_the_shop(page, partner, session_id, "succeeded")
    else:
        expect(page.get_by_role("heading")).to_have_text("Payment complete", timeout=5000)
        expect(page.locator(".spinner")).to_have_count(0)
    assert bridge.status(token["token"])["status"] == "succeeded"
    assert len(bank.posts()) == 1


def test_two_stage_journey(
    page: Page,
    redirect_bridge: tuple[Bridge, bool],
    partner: Partner,
    bank: Bank,
    session_id: str,
) -> None:
    bridge, onward = redirect_bridge
    token = bridge.token(session_id)
    provider = Provider(bridge, session_id)
    confirmed_to_the_bank_and_back(page, bridge, bank, provider, token)

    provider.held()  # the customer's part is over, though the payment is not
    if onward:
        back_at_the_shop(page, partner, session_id, "authorized")
    else:
        expect(page.get_by_role("heading")).to_have_text("Payment approved", timeout=5000)
        expect(page.locator(".spinner")).to_have_count(0)
        expect(page.locator(".badge.good")).to_have_count(1)
    answer = bridge.status(token["token"])
    assert (answer["status"], answer["done"]) == ("authorized", True)
    assert session_answer(bridge, session_id)["next_action"] == "capture"

    provider.finished()  # after the partner's capture
    answer = bridge.status(token["token"])
    assert (answer["status"], answer["done"]) == ("succeeded", True)
    assert session_answer(bridge, session_id)["next_action"] is None
    assert len(bank.posts()) == 1


# --- the embedding script's iframe on the partner's checkout page ----------------------------


def framed_to_the_bank_and_back(
    page: Page,
    partner: Partner,
    bridge: Bridge,
    bank: Bank,
    provider: Provider,
    token: dict[str, Any],
) -> None:
    """The same steps inside the partner's iframe, the script following every status."""
    page.goto(partner.checkout(bridge, status_url=token["status_url"], mode="iframe"))
    page.click("#pay")
    expect(heading(page)).to_have_text("Preparing your payment")
    wait_for_event(page, "status", "pending")

    provider.confirm_first()
    expect(heading(page)).to_have_text("Confirming your payment", timeout=5000)
    wait_for_event(page, "status", "in_progress")
    assert bank.posts() == []

    fields = bank_fields(token)
    provider.bank_step(bank, fields)
    expect(heading(page)).to_have_text("Bank challenge", timeout=5000)
    reached_the_bank(bank, fields)
    wait_for_event(page, "status", "action_required")
    assert page.url.startswith(partner.url)  # the checkout page itself stayed put

    page.frame_locator(FRAME).locator("#complete").click()
    expect(heading(page)).to_have_text("Checking the result")
    assert bridge_frame(page).url == token["return_url"]


STEPS = [["status", "pending"], ["status", "in_progress"], ["status", "action_required"]]


def test_confirm_first_journey_in_an_iframe(
    page: Page, partner: Partner, embedding_bridge: Bridge, bank: Bank, session_id: str
) -> None:
    bridge = embedding_bridge
    token = bridge.token(session_id)
    provider = Provider(bridge, session_id)
    framed_to_the_bank_and_back(page, partner, bridge, bank, provider, token)

    provider.finished()
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    seen = events(page)
    assert seen == [*STEPS, ["status", "succeeded"], ["complete", "succeeded"]], seen
    expect(page.locator("iframe")).to_have_count(0)
    assert len(bank.posts()) == 1


def test_two_stage_journey_in_an_iframe(
    page: Page, partner: Partner, embedding_bridge: Bridge, bank: Bank, session_id: str
) -> None:
    bridge = embedding_bridge
    token = bridge.token(session_id)
    provider = Provider(bridge, session_id)
    framed_to_the_bank_and_back(page, partner, bridge, bank, provider, token)

    provider.held()
    page.wait_for_function(LAST_IS_COMPLETE, timeout=5000)
    seen = events(page)
    assert seen == [*STEPS, ["status", "authorized"], ["complete", "authorized"]], seen
    expect(page.locator("iframe")).to_have_count(0)

    provider.finished()
    assert bridge.status(token["token"])["status"] == "succeeded"
    assert events(page)[-1] == ["complete", "authorized"]  # completed once, and done
    assert len(bank.posts()) == 1
