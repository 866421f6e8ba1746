"""Customer pages are rendered in one go (app.rendering), not by Quart's async renderer: the
same text for every page and request input."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from quart import render_template

from app import rendering

from .conftest import Configured, Deployment, FakeClock
from .payloads import inform, redirect
from .test_fast_path import REQUESTS
from .test_holders import OURS

ELSEWHERE = {"type": "app_confirmation", "app_confirmation": {"bank": "x"}}


async def every_step(bridge: Deployment, clock: FakeClock) -> None:
    """Each step a customer page shows, read with each kind of request input."""
    client, provider = bridge.client, bridge.provider
    token = await bridge.partner.token()
    offered = await client.post(f"/pay/{token}/handoff", headers=OURS)
    assert (await client.get(urlsplit((await offered.get_json())["handoff_url"]).path)).status_code

    async def read_all() -> None:
        for kwargs in REQUESTS:
            assert (await client.get(f"/pay/{token}", **kwargs)).status_code in (200, 410, 502)

    await read_all()  # waiting
    steps = (redirect(), redirect(method="GET"), inform(), redirect(url="http://acs.test/"))
    for minute, interaction in enumerate((*steps, ELSEWHERE)):
        updated_at = f"2027-01-15T07:0{minute}:00.000000Z"
        await provider.deliver("action_required", interaction=interaction, updated_at=updated_at)
        await read_all()  # bank by form, bank by link, qr, refused, elsewhere
    assert (await client.get(f"/pay/{token}/return")).status_code == 200
    clock.advance(3601)
    await read_all()  # expired
    await provider.deliver("payment_finished", updated_at="2027-01-15T09:01:00.000000Z")
    await read_all()  # outcome


async def test_every_customer_page_renders_as_quarts_renderer_renders_it(
    configured: Configured, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step a page shows (waiting, bank, QR, refused, elsewhere, expired, outcome, the
    return, the handoff page), each read with every request input a page varies by (language
    by header and by query, framed, another host), rendered both ways."""
    compared: list[tuple[str, str]] = []
    differing: list[str] = []
    render = rendering.render

    async def both(template: str, **context: Any) -> str:
        text = await render(template, **context)
        if text != await render_template(template, **context):
            differing.append(template)
        opening = text.index("<html")
        compared.append((template, text[opening : text.index(">", opening)]))
        return text

    monkeypatch.setattr(rendering, "render", both)
    async with configured(FRAME_ANCESTORS="https://shop.test") as bridge:
        await every_step(bridge, clock)
    assert not differing, f"rendered differently: {sorted(set(differing))}"
    templates = {template.removeprefix("pay/") for template, _ in compared}
    assert templates >= {
        "waiting.html",
        "bank.html",
        "qr.html",
        "refused.html",
        "elsewhere.html",
        "expired.html",
        "outcome.html",
        "handoff.html",
    }
    assert {head for _, head in compared} >= {'<html lang="en"', '<html lang="ru"'}
