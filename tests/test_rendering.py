"""Customer pages are rendered in one go (app.rendering), not by Quart's async renderer: the
same text for every page and request input."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from quart import render_template

from app import rendering

from .conftest import Configured, FakeClock
from .test_fast_path import every_page
from .test_holders import OURS


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
        token = await bridge.partner.token("ps_handoff")
        offered = await bridge.client.post(f"/pay/{token}/handoff", headers=OURS)
        link = urlsplit((await offered.get_json())["handoff_url"]).path
        assert (await bridge.client.get(link)).status_code == 200
        await every_page(bridge, clock)
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
