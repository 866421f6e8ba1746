"""``POST /pay/{token}/cancel``: the customer's way out of the waiting, bank, QR, "open
elsewhere" and refused pages (README: "Embedding the bank step in a checkout page")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from .conftest import RELAY_SECRET, Configured, FakeClock, Partner, Provider
from .partner import Partner as PartnerBackend
from .partner import recording_partner
from .payloads import inform, redirect
from .test_pages import Page, settings_of
from .test_return import SECRET, signed

SHOP = "https://shop.test/done"
OURS = {"Origin": "https://bridge.test", "Sec-Fetch-Site": "same-origin"}
# What Chromium sends from a bridge page, whose Referrer-Policy is no-referrer.
FROM_A_BRIDGE_PAGE = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
RUSSIAN_CANCELED = "Платёж отменён"
ELSEWHERE = {"type": "inform", "inform": {"notification": {"type": "sber_pay_widget"}}}

# page kind: the webhook that brings a session to it (none: nothing heard yet), its heading
PAGE_KINDS: dict[str, tuple[dict[str, Any] | None, str]] = {
    "waiting": (None, "Preparing your payment"),
    "confirming": ({"kind": "ready_to_confirm"}, "Confirming your payment"),
    "bank": ({"kind": "action_required", "interaction": redirect()}, "Going to your bank"),
    "qr": ({"kind": "action_required", "interaction": inform()}, "Scan to pay"),
    "elsewhere": (
        {"kind": "action_required", "interaction": ELSEWHERE},
        "Finish the payment with your bank",
    ),
    # A bank instruction the bridge will not follow: the customer is not left without a way out.
    "refused": (
        {"kind": "action_required", "interaction": redirect(url="https://acs.bank,evil/x")},
        "We could not open your bank's page",
    ),
}


async def bring(provider: Provider, kind: str) -> None:
    webhook = PAGE_KINDS[kind][0]
    if webhook is not None:
        await provider.deliver(**webhook)


async def cancel_form(client: Any, token: str, query: str = "") -> dict[str, str]:
    """The page's one cancel form, with its button."""
    response = await client.get(f"/pay/{token}{query}")
    html = await response.get_data(as_text=True)
    (form,) = Page(html).way_out
    assert form["method"] == "post"
    assert html.count('data-bridge-action="cancel"') == 1
    return form


async def status_of(client: Any, token: str) -> dict[str, Any]:
    answer: dict[str, Any] = await (await client.get(f"/api/v1/status/{token}")).get_json()
    return answer


async def history(partner: Partner) -> list[dict[str, Any]]:
    response = await partner.client.get("/api/v1/sessions/ps_1/events", headers=partner.headers)
    events: list[dict[str, Any]] = (await response.get_json())["events"]
    return events


@pytest.mark.parametrize("kind", list(PAGE_KINDS))
async def test_a_customer_cancels_from_each_page(
    kind: str, provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await bring(provider, kind)
    form = await cancel_form(client, token)
    shown = await (await client.get(f"/pay/{token}")).get_data(as_text=True)
    assert PAGE_KINDS[kind][1] in Page(shown).text
    assert form["action"] == f"/pay/{token}/cancel"

    response = await client.post(form["action"], headers=FROM_A_BRIDGE_PAGE)
    assert response.status_code == 200  # the outcome, no redirect (see app.pages.cancel)
    page = Page(await response.get_data(as_text=True))
    assert "Payment canceled" in page.text
    assert response.headers["Content-Security-Policy"]  # a customer page's headers
    status = await status_of(client, token)
    assert (status["status"], status["reason"]) == ("canceled", "customer")
    session = await (await partner.session()).get_json()
    assert (session["status"], session["reason"], session["action"]) == (
        "canceled",
        "customer",
        None,
    )
    assert [event["kind"] for event in await history(partner)].count("cancel") == 1
    # The pay page shows the outcome from now on; it offers no way out of it.
    after = await client.get(f"/pay/{token}")
    assert "Payment canceled" in Page(await after.get_data(as_text=True)).text
    assert Page(await after.get_data(as_text=True)).way_out == []


async def test_the_form_keeps_the_pages_language_and_embedder(
    configured: Configured,
) -> None:
    async with configured(FRAME_ANCESTORS="https://*.shop.test") as bridge:
        token = await bridge.partner.token()
        query = "?lang=ru&embedder=https%3A%2F%2Fwww.shop.test"
        form = await cancel_form(bridge.client, token, query)
        assert form["action"] == f"/pay/{token}/cancel{query}"
        framed = {**FROM_A_BRIDGE_PAGE, "Sec-Fetch-Dest": "iframe"}
        response = await bridge.client.post(form["action"], headers=framed)
        html = await response.get_data(as_text=True)
        assert RUSSIAN_CANCELED in Page(html).text
        assert "https://www.shop.test" in settings_of(html)["origins"]  # told to the embedder


async def test_the_label_is_in_russian(partner: Partner, client: Any) -> None:
    token = await partner.token()
    html = await (await client.get(f"/pay/{token}?lang=ru")).get_data(as_text=True)
    assert "Отменить оплату" in html and "Cancel payment" not in html


async def test_the_customer_goes_on_to_the_return_url_signed(configured: Configured) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_SECRET=SECRET) as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("action_required")
        response = await bridge.client.post(f"/pay/{token}/cancel", headers=OURS)
        assert response.status_code == 200
        html = await response.get_data(as_text=True)
        onward = settings_of(html)["onward_url"]
        assert onward.startswith(f"{SHOP}?session_id=ps_1&status=canceled&ts=")
        assert signed(onward)
        # Without script, the link to the shop; with it, page.js goes there (outside a frame).
        assert onward.replace("&", "&amp;") in html


async def test_a_second_cancel_changes_nothing(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    await client.post(f"/pay/{token}/cancel", headers=OURS)
    first = await status_of(client, token)
    clock.advance(30)
    again = await client.post(f"/pay/{token}/cancel", headers=OURS)
    assert again.status_code == 200
    assert "Payment canceled" in Page(await again.get_data(as_text=True)).text
    assert await status_of(client, token) == first
    assert [event["kind"] for event in await history(partner)].count("cancel") == 1


@pytest.mark.parametrize(
    ("webhook", "heading"),
    [
        ({"kind": "payment_finished", "session_status": "accepted"}, "Payment complete"),
        ({"kind": "ready_to_capture"}, "Payment approved"),
        ({"kind": "payment_finished", "payment_status": "failed"}, "Payment not approved"),
    ],
)
async def test_a_cancel_after_the_outcome_changes_nothing_and_shows_it(
    webhook: dict[str, Any], heading: str, provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    await provider.deliver(**webhook)
    before = await status_of(client, token)
    response = await client.post(f"/pay/{token}/cancel", headers=OURS)
    assert response.status_code == 200
    assert heading in Page(await response.get_data(as_text=True)).text
    assert await status_of(client, token) == before
    assert "cancel" not in [event["kind"] for event in await history(partner)]


async def test_a_cancel_after_the_window_shows_the_expiry(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    clock.advance(3600)
    response = await client.post(f"/pay/{token}/cancel", headers=OURS)
    assert response.status_code == 410
    status = await status_of(client, token)
    assert (status["status"], status["reason"]) == ("canceled", "action_timeout")
    assert "cancel" not in [event["kind"] for event in await history(partner)]


async def test_the_providers_final_status_replaces_the_cancel(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    await client.post(f"/pay/{token}/cancel", headers=OURS)
    await provider.deliver("ready_to_capture")  # not final: the customer's word stands
    assert (await status_of(client, token))["reason"] == "customer"
    await provider.deliver("payment_finished", session_status="accepted")
    status = await status_of(client, token)
    assert (status["status"], status["reason"]) == ("succeeded", None)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://shop.evil.test"},
        {"Origin": "https://bridge.test.evil.test"},
        {"Origin": "http://bridge.test"},  # another scheme is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # a sibling host is another origin's page
        {"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_another_sites_page_cannot_cancel(
    headers: dict[str, str], provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    response = await client.post(f"/pay/{token}/cancel", headers=headers)
    assert response.status_code == 403
    assert (await status_of(client, token))["status"] == "action_required"
    assert "cancel" not in [event["kind"] for event in await history(partner)]


@pytest.mark.parametrize(
    "headers", [{}, OURS, FROM_A_BRIDGE_PAGE, {"Origin": "https://bridge.test:443"}]
)
async def test_the_bridges_own_pages_and_servers_may_cancel(
    headers: dict[str, str], partner: Partner, client: Any
) -> None:
    token = await partner.token()
    response = await client.post(f"/pay/{token}/cancel", headers=headers)
    assert response.status_code == 200
    assert (await status_of(client, token))["status"] == "canceled"


@pytest.mark.parametrize("token", ["garbage", "InBzXzEi.a0nSAA.osAlmuJ5og3VOYHkIB02JEL7kfX"])
async def test_a_bad_token_cancels_nothing(token: str, client: Any) -> None:
    response = await client.post(f"/pay/{token}/cancel", headers=OURS)
    assert response.status_code == 404
    assert "text/html" in response.headers["Content-Type"]


async def test_cancel_is_a_post(partner: Partner, client: Any) -> None:
    token = await partner.token()
    assert (await client.get(f"/pay/{token}/cancel")).status_code == 405
    assert (await status_of(client, token))["status"] == "pending"


@pytest.fixture
def partner_backend() -> Iterator[PartnerBackend]:
    with recording_partner() as backend:
        yield backend


async def test_the_partner_hears_the_cancel_as_a_session_update(
    configured: Configured, partner_backend: PartnerBackend
) -> None:
    relay = {"RELAY_URL": partner_backend.url, "RELAY_EVENTS": "bridge"}
    async with configured(**relay) as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("action_required")
        await bridge.client.post(f"/pay/{token}/cancel", headers=OURS)
        await bridge.client.post(f"/pay/{token}/cancel", headers=OURS)  # no news: none sent
        received = await partner_backend.arrived(2)
        await asyncio.sleep(0.2)  # nothing more comes
    messages = [Webhook(RELAY_SECRET).verify(item.body, item.headers) for item in received]
    assert len(partner_backend.received) == 2
    updates = [json.loads(item.body) for item in received]
    assert [message["type"] for message in messages] == ["session.updated"] * 2
    assert [(update["data"]["status"], update["data"]["reason"]) for update in updates] == [
        ("action_required", None),
        ("canceled", "customer"),
    ]
