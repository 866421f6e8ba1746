"""One page at the bank at a time, and the links that move the bank step to another browser:
the endpoints the pages' scripts call, on both engines (the browser tests drive them in
Chromium)."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.bridge import HANDOFF_TTL, PAGE_CALLS
from app.limits import RateLimiter

from .conftest import FakeClock, Partner, Provider
from .payloads import redirect

TAB_A = "a" * 32
TAB_B = "b" * 32
OURS = {"Origin": "https://bridge.test", "Sec-Fetch-Site": "same-origin"}


async def claim(client: Any, token: str, page: str, *, take: bool = False, **headers: str) -> Any:
    return await client.post(
        f"/pay/{token}/claim", json={"page": page, "take": take}, headers={**OURS, **headers}
    )


async def held(client: Any, token: str, page: str, *, take: bool = False) -> bool:
    answer = await claim(client, token, page, take=take)
    assert answer.status_code == 200, await answer.get_data(as_text=True)
    return bool((await answer.get_json())["held"])


async def hand_off(client: Any, token: str) -> dict[str, Any]:
    answer = await client.post(f"/pay/{token}/handoff", headers=OURS)
    assert answer.status_code == 201, await answer.get_data(as_text=True)
    return dict(await answer.get_json())


async def test_the_first_page_holds_the_step_and_another_takes_it_only_when_asked(
    client: Any, partner: Partner
) -> None:
    token = await partner.token()
    assert await held(client, token, TAB_A)
    assert await held(client, token, TAB_A)  # a reload of the same tab
    assert not await held(client, token, TAB_B)  # another tab: it does not submit
    assert await held(client, token, TAB_B, take=True)  # continue-here
    assert not await held(client, token, TAB_A)  # the first page then stops
    other = await partner.token()  # another token of the same session: the same step
    assert not await held(client, other, TAB_A)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://pay.bridge.test"},
    ],
)
async def test_another_sites_requests_are_refused(
    client: Any, partner: Partner, headers: dict[str, str]
) -> None:
    token = await partner.token()
    answer = await client.post(f"/pay/{token}/claim", json={"page": TAB_A}, headers=headers)
    assert answer.status_code == 403
    assert (await answer.get_json())["error"]["code"] == "forbidden"
    answer = await client.post(f"/pay/{token}/handoff", headers=headers)
    assert answer.status_code == 403
    assert (await answer.get_json())["error"]["code"] == "forbidden"
    assert await held(client, token, TAB_B)  # nothing was claimed


async def test_a_form_whose_origin_the_referrer_policy_hides_is_ours(
    client: Any, partner: Partner
) -> None:
    token = await partner.token()
    answer = await client.post(
        f"/pay/{token}/claim",
        json={"page": TAB_A},
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 200


async def test_bad_tokens_and_bodies_are_refused_and_claim_nothing(
    client: Any, partner: Partner
) -> None:
    for answer in (
        await claim(client, "not-a-token", TAB_A),
        await client.post("/pay/not-a-token/handoff", headers=OURS),
    ):  # JSON endpoints: every refusal in JSON, as the reports' are
        assert answer.status_code == 404
        assert answer.content_type == "application/json"
        assert (await answer.get_json())["error"]["code"] == "not_found"
    token = await partner.token()
    for body in ({}, {"page": "short"}, {"page": TAB_A, "take": "yes"}, {"page": TAB_A, "x": 1}):
        answer = await client.post(f"/pay/{token}/claim", json=body, headers=OURS)
        assert answer.status_code == 422, body
        assert (await answer.get_json())["error"]["code"] == "invalid_request"
    answer = await client.post(f"/pay/{token}/claim", data=b"{", headers=OURS)
    assert answer.status_code == 400
    assert await held(client, token, TAB_B)


async def test_a_page_asks_a_bounded_number_of_times(
    app: Any, client: Any, partner: Partner
) -> None:
    # The limiter's own clock stands still: the burst is all there is (on a busy machine, the
    # requests took long enough for the real clock to allow one more).
    app.extensions["bridge"].page_calls = RateLimiter(PAGE_CALLS, clock=lambda: 1_000.0)
    token = await partner.token()
    for _ in range(PAGE_CALLS):
        assert (await claim(client, token, TAB_A)).status_code == 200
    refused = await claim(client, token, TAB_A)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1


async def test_a_handoff_link_is_claimed_once_by_its_pages_script(
    client: Any, app: Any, partner: Partner, provider: Provider
) -> None:
    token = await partner.token()
    await provider.deliver("action_required", interaction=redirect())
    assert await held(client, token, TAB_A)
    answer = await hand_off(client, token)
    link = answer["handoff_url"]
    assert link.startswith("https://bridge.test/pay/handoff/")
    assert answer["qr"].startswith("data:image/svg+xml")
    assert answer["expires_at"].endswith("Z")
    secret = urlsplit(link).path.rsplit("/", 1)[1]
    assert token not in link
    path = urlsplit(link).path

    # A link preview fetches the page: it claims nothing.
    for _ in range(2):
        preview = await client.get(path)
        assert preview.status_code == 200
        assert 'id="handoff-form"' in await preview.get_data(as_text=True)
    assert (await client.head(path)).status_code == 200
    assert await held(client, token, TAB_A)

    # The phone's page claims it: its tab holds the step, with a token of its own.
    taken = await client.post(path, form={"page": TAB_B}, headers=OURS)
    assert taken.status_code == 303
    phone_path = taken.headers["Location"]
    phone_token = phone_path.removeprefix("/pay/")  # minted for the session, like any token
    assert (await client.get(phone_path)).status_code == 200
    assert await held(client, phone_token, TAB_B)
    assert not await held(client, token, TAB_A)  # the first browser follows, no submit

    # Any later opening of the link is a 410 page, and claims nothing.
    assert (await client.get(path)).status_code == 410
    again = await client.post(path, form={"page": TAB_A}, headers=OURS)
    assert again.status_code == 410
    assert not await held(client, token, TAB_A)

    # continue-here takes it back.
    assert await held(client, token, TAB_A, take=True)
    assert not await held(client, phone_token, TAB_B)

    history = await partner.client.get("/api/v1/sessions/ps_1/events", headers=partner.headers)
    browser = [e for e in (await history.get_json())["events"] if e["kind"] == "browser"]
    assert [e["event"] for e in browser] == ["handoff"]
    assert secret not in str(await history.get_data(as_text=True))


async def test_only_the_hash_of_a_handoffs_secret_is_stored(
    client: Any, app: Any, partner: Partner
) -> None:
    token = await partner.token()
    secret = urlsplit((await hand_off(client, token))["handoff_url"]).path.rsplit("/", 1)[1]
    store = app.extensions["bridge"].store
    stored = await store.handoff(hashlib.sha256(secret.encode()).digest())
    assert stored is not None and stored.session_id == "ps_1"
    assert secret.encode() not in stored.digest


async def test_a_handoff_link_expires_after_ten_minutes(
    client: Any, partner: Partner, clock: FakeClock
) -> None:
    token = await partner.token()
    path = urlsplit((await hand_off(client, token))["handoff_url"]).path
    clock.advance(HANDOFF_TTL - 1)
    assert (await client.get(path)).status_code == 200
    clock.advance(1)
    assert (await client.get(path)).status_code == 410
    assert (await client.post(path, form={"page": TAB_B}, headers=OURS)).status_code == 410
    assert await held(client, token, TAB_A)


async def test_a_handoff_form_sent_without_script_holds_the_step_for_no_page(
    client: Any, partner: Partner
) -> None:
    token = await partner.token()
    path = urlsplit((await hand_off(client, token))["handoff_url"]).path
    taken = await client.post(path, form={"page": ""}, headers=OURS)
    assert taken.status_code == 303
    assert not await held(client, token, TAB_A)


async def test_unknown_handoff_links_are_404_and_another_sites_form_403(
    client: Any, partner: Partner
) -> None:
    assert (await client.get("/pay/handoff/" + "x" * 43)).status_code == 404
    assert (await client.get("/pay/handoff/short")).status_code == 404
    token = await partner.token()
    path = urlsplit((await hand_off(client, token))["handoff_url"]).path
    forged = await client.post(
        path, form={"page": TAB_B}, headers={"Origin": "https://evil.example"}
    )
    assert forged.status_code == 403
    assert (await client.get(path)).status_code == 200  # still unused


async def test_no_handoff_once_the_customers_part_is_over(
    client: Any, partner: Partner, provider: Provider
) -> None:
    token = await partner.token()
    await provider.deliver("payment_finished", session_status="accepted")
    answer = await client.post(f"/pay/{token}/handoff", headers=OURS)
    assert answer.status_code == 410
    assert (await answer.get_json())["error"]["code"] == "gone"
