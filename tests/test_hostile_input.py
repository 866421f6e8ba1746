"""What a security review sent the bridge, one finding a test: each reproduced before its fix."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from itsdangerous import base64_decode, base64_encode

from app.actions import RefusedActionError, customer_action
from app.limits import RateLimiter
from app.security import origin_matches
from app.tokens import Tokens

from .conftest import API_KEY, Configured, FakeClock, Partner, Provider
from .payloads import redirect

# --- tokens ---------------------------------------------------------------------------------


async def test_junk_tokens_cost_the_status_limiter_nothing(app: Any, client: Any) -> None:
    limiter = app.extensions["bridge"].status_limit
    for number in range(300):
        junk = f"{number:x}." + "A" * 6000
        assert (await client.get(f"/api/v1/status/{junk}")).status_code == 404
    assert len(limiter) == 0


async def test_the_status_limit_applies_to_a_real_token(
    configured: Configured, clock: FakeClock
) -> None:
    async with configured(STATUS_RATE_LIMIT=3) as bridge:
        token = await bridge.partner.token()
        codes = [(await bridge.client.get(f"/api/v1/status/{token}")).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        limiter = bridge.app.extensions["bridge"].status_limit
        assert len(limiter) == 1


def test_every_rate_limit_table_is_bounded() -> None:
    now = [0.0]
    limiter = RateLimiter(5, clock=lambda: now[0], keys=100)
    for number in range(1000):
        limiter.check(f"key-{number}")  # all still counted: none expired
    assert len(limiter) <= 100


def spellings(segment: str) -> list[str]:
    """Every base64 spelling of the bytes ``segment`` encodes: the last character's spare bits."""
    decoded = base64_decode(segment)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return [
        segment[:-1] + last for last in alphabet if base64_decode(segment[:-1] + last) == decoded
    ]


def test_a_token_is_accepted_in_its_one_canonical_spelling_only() -> None:
    reader = Tokens(["a-secret-for-tokens-0123456789abcdef"], 60, FakeClock())
    token = reader.mint("ps_1").token
    payload, stamp, signature = token.split(".")
    assert base64_encode(base64_decode(signature)).decode() == signature
    variants = {
        f"{payload}.{stamp}.{other}" for other in spellings(signature) if other != signature
    } | {f"{other}.{stamp}.{signature}" for other in spellings(payload) if other != payload}
    assert len(variants) >= 3  # the signature alone has four spellings
    assert reader.read(token) is not None
    for variant in variants:
        assert reader.read(variant) is None, variant


# --- bank fields a browser would not send as they are -------------------------------------


@pytest.mark.parametrize("name", ["_charset_", "_CHARSET_", "_Charset_", ""])
def test_a_post_field_the_browser_would_change_is_refused(name: str) -> None:
    instruction = redirect(params={"PaReq": "p", name: "x"})
    with pytest.raises(RefusedActionError, match="field"):
        customer_action(instruction, allow_http=False)


@pytest.mark.parametrize("name", ["_charset_", ""])
def test_a_get_instruction_carries_such_names_exactly(name: str) -> None:
    """A navigation is no form: the browser sends the URL's bytes as they are."""
    step = customer_action(redirect(method="GET", qs={}, params={name: "x"}), allow_http=False)
    assert step.url.endswith(f"?{name}=x") or step.url.endswith(f"&{name}=x")  # type: ignore[union-attr]


async def test_the_page_refuses_it_and_the_log_says_why(
    provider: Provider, partner: Partner, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = await partner.token()
    await provider.deliver("action_required", interaction=redirect(params={"_charset_": "x"}))
    with caplog.at_level(logging.WARNING):
        response = await client.get(f"/pay/{token}")
    assert response.status_code == 502
    assert "We could not open your bank" in await response.get_data(as_text=True)
    assert any("_charset_" in record.getMessage() for record in caplog.records)


def test_a_refused_scheme_is_not_logged_verbatim() -> None:
    planted = "secretplanted0123"
    with pytest.raises(RefusedActionError) as refused:
        customer_action(
            redirect(url=f"{planted}://acs.bank.test/x", base_url=None), allow_http=False
        )
    assert planted not in str(refused.value)


# --- origins ----------------------------------------------------------------------------------

# (pattern, origin, matches): the one table the server's rule and the page script's are held to
# (tests/browser/test_embedding.py runs the page's own function over it).
ORIGIN_TABLE: list[tuple[str, str, bool]] = [
    ("https://shop.example", "https://shop.example", True),
    ("https://shop.example", "https://shop.example:443", False),
    ("https://shop.example", "http://shop.example", False),
    ("https://*.shop.example", "https://a.shop.example", True),  # one character
    ("https://*.shop.example", "https://pay.shop.example", True),
    ("https://*.shop.example", "https://eu.pay.shop.example", True),
    ("https://*.shop.example", "https://shop.example", False),
    ("https://*.shop.example", "https://.shop.example", False),
    ("https://*.shop.example", "https://evilshop.example", False),
    ("https://*.shop.example", "https://evil.example/x.shop.example", False),
    ("https://*.shop.example", "https://evil.example#.shop.example", False),
    ("https://*.shop.example", "https://evil.example?.shop.example", False),
    ("https://*.shop.example", "https://evil.example/.shop.example", False),
    ("https://*.shop.example", "https://user@a.shop.example", False),
    ("https://*.shop.example", "http://a.shop.example", False),
    ("https://*.shop.example", "https://a.shop.example:8443", False),
    ("https://*.shop.example:8443", "https://a.shop.example:8443", True),
    ("https://*.shop.example:8443", "https://a.shop.example", False),
    ("https://*.shop.example", "https://a.shop.example.evil.example", False),
    ("https://*.shop.example", "https://a..shop.example", False),
    ("https://*.shop.example", "https://-a.shop.example", False),
    ("https://*.shop.example", "null", False),
    ("https://*.shop.example", "", False),
]


@pytest.mark.parametrize(("pattern", "origin", "expected"), ORIGIN_TABLE)
def test_origins_are_parsed_then_matched(pattern: str, origin: str, expected: bool) -> None:
    assert origin_matches(pattern, origin) is expected


# --- the return from the bank -----------------------------------------------------------------


async def test_head_on_the_return_records_nothing(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    head = await client.head(f"/pay/{token}/return")
    assert head.status_code == 200
    page = await client.get(f"/pay/{token}")
    assert 'id="bank-form"' in await page.get_data(as_text=True)  # the form is still there


async def test_a_return_is_written_once_per_action(
    app: Any, provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    store = app.extensions["bridge"].store
    writes = 0
    update = store.update_session

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal writes
        writes += 1
        return await update(*args, **kwargs)

    store.update_session = counted
    for _ in range(20):
        clock.advance(1)
        assert (await client.get(f"/pay/{token}/return")).status_code == 200
    assert writes == 1
    # A new bank step is a new action: its return is recorded again.
    await provider.deliver("action_required", interaction=redirect(params={"PaReq": "second"}))
    await client.post(f"/pay/{token}/return")
    assert writes == 2


# --- storage ----------------------------------------------------------------------------------


async def test_sqlite_files_are_private(configured: Configured, tmp_path: Path) -> None:
    path = tmp_path / "private" / "bridge.sqlite3"
    old = os.umask(0o022)
    try:
        async with configured(DATABASE_URL=f"sqlite:///{path}") as bridge:
            await bridge.partner.token()
    finally:
        os.umask(old)
    files = [item for item in path.parent.iterdir() if item.is_file()]
    assert path in files
    for item in files:
        assert stat.S_IMODE(item.stat().st_mode) & 0o077 == 0, item


# --- the partner API --------------------------------------------------------------------------


async def test_wrong_api_keys_are_throttled(client: Any) -> None:
    codes = []
    for number in range(60):
        headers = {"Authorization": f"Bearer guess-{number}"}
        codes.append((await client.get("/api/v1/sessions/ps_1", headers=headers)).status_code)
    assert set(codes[:10]) == {401}
    assert codes[-1] == 429
    # The right key from the same address is throttled too while it lasts: guessing is costly.
    right = await client.get(
        "/api/v1/sessions/ps_1", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert right.status_code == 429


@pytest.mark.parametrize("session_id", [".", ".."])
async def test_dot_session_ids_are_refused(partner: Partner, client: Any, session_id: str) -> None:
    response = await client.post(f"/api/v1/sessions/{session_id}/tokens", headers=partner.headers)
    assert response.status_code in (404, 422)


async def test_json_answers_are_not_sniffed_nor_stored(partner: Partner, client: Any) -> None:
    token = await partner.token()
    for response in (
        await client.get(f"/api/v1/status/{token}"),
        await partner.session(),
        await client.get("/api/v1/sessions/ps_1"),  # 401
        await client.get("/api/v1/status/nope"),  # 404
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cache-Control"] in ("no-store", "no-cache")


async def test_metrics_can_be_kept_behind_a_token(configured: Configured) -> None:
    async with configured(METRICS_TOKEN="metrics-token-0123456789") as bridge:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            answer = await bridge.client.get("/metrics", headers=headers)
            assert answer.status_code == 401
            assert "webhooks" not in await answer.get_data(as_text=True)
        allowed = await bridge.client.get(
            "/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"}
        )
        assert allowed.status_code == 200
        assert "bridge_webhooks_total" in await allowed.get_data(as_text=True)
