"""``POST /pay/{token}/browser``: the browser's reports of the bank step, in the history."""

from __future__ import annotations

import json
from typing import Any

import pytest
from quart import Quart

from app.bridge import BROWSER_EVENTS_KEPT, BROWSER_REPORTS
from app.limits import RateLimiter

from .conftest import Partner, Provider
from .test_cancel import FROM_A_BRIDGE_PAGE, OURS, history


async def report(client: Any, token: str, body: Any, headers: dict[str, str] = OURS) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    return await client.post(f"/pay/{token}/browser", data=data, headers=headers)


def browser_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["kind"] == "browser"]


@pytest.mark.parametrize(
    "body",
    [
        {"event": "bank", "mode": "iframe"},
        {"event": "bank", "mode": "popup"},
        {"event": "bank", "mode": "page"},
        {"event": "fallback", "mode": "popup"},
        {"event": "handoff", "mode": None},
        {"event": "handoff"},
    ],
)
async def test_a_report_joins_the_history(
    body: dict[str, Any], provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    response = await report(client, token, body, FROM_A_BRIDGE_PAGE)
    assert response.status_code == 204
    assert await response.get_data() == b""
    (event,) = browser_events(await history(partner))
    assert set(event) == {"at", "kind", "event", "mode"}  # nothing of the customer's
    assert (event["event"], event["mode"]) == (body["event"], body.get("mode"))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "invalid_json"),
        (b"{not json", 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        ([], 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"event": "bank", "mode": "tab"}, 422, "invalid_request"),
        ({"event": "submitted", "mode": "page"}, 422, "invalid_request"),
        ({"event": "bank", "mode": "page", "url": "https://a.test/"}, 422, "invalid_request"),
        ({"event": 1}, 422, "invalid_request"),
        (b'{"event": "bank", "mode": "' + b"p" * 2000 + b'"}', 413, "body_too_large"),
    ],
)
async def test_a_body_that_is_no_report_is_refused_in_json(
    body: Any, status: int, code: str, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    response = await report(client, token, body)
    assert response.status_code == status
    assert (await response.get_json())["error"]["code"] == code
    assert browser_events(await history(partner)) == []


@pytest.mark.parametrize(
    "headers", [{"Origin": "https://shop.evil.test"}, {"Sec-Fetch-Site": "cross-site"}]
)
async def test_another_sites_page_cannot_report(
    headers: dict[str, str], partner: Partner, client: Any
) -> None:
    token = await partner.token()
    response = await report(client, token, {"event": "bank", "mode": "page"}, headers)
    assert response.status_code == 403
    assert (await response.get_json())["error"]["code"] == "forbidden"
    assert browser_events(await history(partner)) == []


async def test_a_bad_token_reports_nothing(client: Any) -> None:
    response = await report(client, "garbage", {"event": "bank", "mode": "page"})
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"


async def test_a_session_keeps_a_few_dozen_reports_and_answers_the_rest(
    app: Quart, partner: Partner, client: Any
) -> None:
    """Beyond the few dozen a session's history keeps, a report is answered 204 and not
    stored: a page that reports in a loop fills nothing, and learns nothing from the answer."""
    app.extensions["bridge"].browser_limit = RateLimiter(0)  # the rate is the next test's
    token = await partner.token()
    for _ in range(BROWSER_EVENTS_KEPT + 5):
        response = await report(client, token, {"event": "fallback", "mode": "popup"})
        assert response.status_code == 204
    assert len(browser_events(await history(partner))) == BROWSER_EVENTS_KEPT
    other = await partner.token("ps_2")  # another session's history is its own
    assert (await report(client, other, {"event": "bank", "mode": "page"})).status_code == 204


async def test_reports_are_rate_limited_per_token(partner: Partner, client: Any) -> None:
    token, other = await partner.token(), await partner.token("ps_2")
    for _ in range(BROWSER_REPORTS):
        assert (await report(client, token, {"event": "bank", "mode": "page"})).status_code == 204
    refused = await report(client, token, {"event": "bank", "mode": "page"})
    assert refused.status_code == 429
    assert (await refused.get_json())["error"]["code"] == "too_many_requests"
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await report(client, other, {"event": "bank", "mode": "page"})).status_code == 204
    assert len(browser_events(await history(partner))) == BROWSER_REPORTS  # ps_1 alone
