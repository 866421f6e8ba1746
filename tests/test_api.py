from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from app import create_app

from .conftest import API_KEY, Configured, FakeClock, Partner, Provider
from .payloads import inform

SECRETS = ("sdfew^//asdhbv", "abc75daefnn", "acs.bank.test", "444600", "8801", "user@sg.com")


def assert_no_secrets(answer: Any) -> None:
    text = json.dumps(answer)
    for secret in SECRETS:
        assert secret not in text, secret


# --- tokens -------------------------------------------------------------------------------


async def test_minting_works_before_any_webhook(
    partner: Partner, client: Any, clock: FakeClock
) -> None:
    response = await client.post("/api/v1/sessions/ps_new/tokens", headers=partner.headers)
    assert response.status_code == 201
    answer = await response.get_json()
    assert set(answer) == {"token", "pay_url", "status_url", "return_url", "expires_at"}
    assert answer["pay_url"] == f"https://bridge.test/pay/{answer['token']}"
    assert answer["return_url"] == f"https://bridge.test/pay/{answer['token']}/return"
    assert answer["status_url"] == f"https://bridge.test/api/v1/status/{answer['token']}"
    assert answer["expires_at"] == "2027-01-15T14:00:00.000Z"  # clock + 6 h
    session = await (await partner.session("ps_new")).get_json()
    assert session["status"] == "pending"
    status = await (await client.get(f"/api/v1/status/{answer['token']}")).get_json()
    assert status["status"] == "pending"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-key", f"Basic {API_KEY}", f"Bearer {API_KEY}x", API_KEY],
)
async def test_partner_endpoints_need_a_valid_bearer_key(
    client: Any, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in (
        ("POST", "/api/v1/sessions/ps_1/tokens"),
        ("GET", "/api/v1/sessions/ps_1"),
    ):
        response = await client.open(path, method=method, headers=headers)
        assert response.status_code == 401
        assert (await response.get_json())["error"]["code"] == "unauthorized"


async def test_without_configured_api_keys_partner_endpoints_answer_401(
    configured: Configured,
) -> None:
    async with configured(API_KEYS=[]) as bridge:
        for authorization in ("Bearer ", f"Bearer {API_KEY}"):
            response = await bridge.client.post(
                "/api/v1/sessions/ps_1/tokens", headers={"Authorization": authorization}
            )
            assert response.status_code == 401


async def test_a_bad_session_id_is_422(partner: Partner, client: Any) -> None:
    response = await client.post(f"/api/v1/sessions/{'x' * 257}/tokens", headers=partner.headers)
    assert response.status_code == 422
    assert (await response.get_json())["error"]["code"] == "invalid_session_id"


# --- sessions -----------------------------------------------------------------------------


async def test_unknown_session_is_404(partner: Partner) -> None:
    response = await partner.session("ps_nobody")
    assert response.status_code == 404
    assert (await response.get_json())["error"] == {
        "code": "unknown_session",
        "message": "no such session",
    }


def provider_time(minute: int) -> str:
    return f"2027-01-15T07:{minute:02}:00.000000Z"


async def test_next_action_says_what_the_provider_waits_for(
    provider: Provider, partner: Partner, clock: FakeClock
) -> None:
    """The two-stage flow as the provider documents it; a partner that polls learns from
    ``next_action`` when to call session/confirm and session/capture."""
    steps: list[tuple[str, dict[str, Any], str, str | None]] = [
        ("ready_to_confirm", {"next_action": "confirm"}, "in_progress", "confirm"),
        ("action_required", {}, "action_required", None),
        ("ready_to_capture", {"next_action": "capture"}, "authorized", "capture"),
        ("payment_finished", {"session_status": "accepted"}, "succeeded", None),
    ]
    for minute, (kind, fields, status, next_action) in enumerate(steps):
        clock.advance(5)
        await provider.deliver(kind, updated_at=provider_time(minute), **fields)
        answer = await (await partner.session()).get_json()
        assert (answer["status"], answer["next_action"]) == (status, next_action), kind
        assert (answer["action"] is not None) is (status == "action_required")


async def test_next_action_is_null_once_final_whatever_the_payload_says(
    provider: Provider, partner: Partner
) -> None:
    await provider.deliver("ready_to_confirm", updated_at=provider_time(1))
    assert (await (await partner.session()).get_json())["next_action"] == "confirm"
    await provider.deliver(
        "payment_finished",
        updated_at=provider_time(2),
        session_status="cancelled",
        next_action="confirm",
    )
    answer = await (await partner.session()).get_json()
    assert (answer["status"], answer["next_action"]) == ("canceled", None)


async def test_a_late_older_webhook_changes_nothing_the_partner_sees(
    provider: Provider, partner: Partner
) -> None:
    await provider.deliver("ready_to_confirm", updated_at=provider_time(1))
    await provider.deliver("action_required", updated_at=provider_time(2))
    before = await (await partner.session()).get_json()
    # The provider's retry of the first webhook, serialised anew: not a byte duplicate.
    retried = await provider.deliver("ready_to_confirm", updated_at=provider_time(1), retry=1)
    assert await retried.get_json() == {"status": "accepted"}
    assert await (await partner.session()).get_json() == before
    assert before["status"] == "action_required"


async def test_session_answer_offers_the_bridge_page_never_the_bank(
    provider: Provider, partner: Partner, clock: FakeClock
) -> None:
    await provider.deliver("action_required")
    answer = await (await partner.session()).get_json()
    assert set(answer) == {
        "session_id",
        "status",
        "reason",
        "next_action",
        "payments",
        "action",
        "updated_at",
        "expires_at",
    }
    assert answer["status"] == "action_required"
    assert answer["next_action"] is None
    assert answer["expires_at"] == "2027-01-15T09:00:00.000Z"  # received + 3600 s
    assert answer["action"]["type"] == "redirect"
    assert answer["action"]["url"].startswith("https://bridge.test/pay/")
    assert answer["action"]["expires_at"] == answer["expires_at"]
    assert answer["payments"] == [
        {
            "id": "pm_1313",
            "status": "pending",
            "amount": 15000,
            "currency": "usd",
            "created_at": "2024-05-27T02:03:00.000000Z",
            "finished_at": None,
        }
    ]
    assert_no_secrets(answer)


async def test_inform_action_is_offered_as_the_bridge_page(
    provider: Provider, partner: Partner
) -> None:
    await provider.deliver("action_required", interaction=inform())
    answer = await (await partner.session()).get_json()
    assert answer["action"]["type"] == "inform"
    assert "nspk" not in json.dumps(answer)


async def test_the_action_window_ends_in_canceled_action_timeout(
    provider: Provider, partner: Partner, clock: FakeClock
) -> None:
    await provider.deliver("action_required")
    clock.advance(3599)
    assert (await (await partner.session()).get_json())["status"] == "action_required"
    clock.advance(1)
    answer = await (await partner.session()).get_json()
    assert (answer["status"], answer["reason"]) == ("canceled", "action_timeout")
    assert answer["action"] is None and answer["expires_at"] is None
    assert answer["updated_at"] == "2027-01-15T09:00:00.000Z"
    await provider.deliver("payment_finished", session_status="accepted")
    answer = await (await partner.session()).get_json()
    assert (answer["status"], answer["reason"]) == ("succeeded", None)


async def test_the_action_window_is_configurable(configured: Configured, clock: FakeClock) -> None:
    async with configured(ACTION_TIMEOUT="60") as bridge:
        await bridge.provider.deliver("action_required")
        clock.advance(59)
        assert (await (await bridge.partner.session()).get_json())["reason"] is None
        clock.advance(1)
        answer = await (await bridge.partner.session()).get_json()
        assert answer["reason"] == "action_timeout"


async def test_the_sweep_records_timeouts(
    app: Any, provider: Provider, config: dict[str, Any], clock: FakeClock
) -> None:
    from .database import query

    await provider.deliver("action_required")
    clock.advance(3600)
    assert await app.extensions["bridge"].sweep() == 1
    rows = await query(config["DATABASE_URL"], "SELECT status, reason, interaction FROM sessions")
    assert rows == [("canceled", "action_timeout", None)]
    assert await app.extensions["bridge"].sweep() == 0


# --- status -------------------------------------------------------------------------------


async def test_status_answer_and_etag(provider: Provider, partner: Partner, client: Any) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    response = await client.get(f"/api/v1/status/{token}")
    assert response.status_code == 200
    answer = await response.get_json()
    assert answer == {
        "status": "action_required",
        "reason": None,
        "action_url": f"https://bridge.test/pay/{token}",
        "updated_at": "2027-01-15T08:00:00.000Z",
        "done": False,
    }
    assert_no_secrets(answer)
    etag = response.headers["ETag"]
    again = await client.get(f"/api/v1/status/{token}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    await provider.deliver("payment_finished", session_status="accepted")
    changed = await client.get(f"/api/v1/status/{token}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert (await changed.get_json())["action_url"] is None
    assert changed.headers["ETag"] != etag


@pytest.mark.parametrize(
    "token", ["nonsense", "InBzXzEi.a0nSAA.AAAAAAAAAAAAAAAAAAAAAAAAAAA", "a.b.c", "..."]
)
async def test_bad_tokens_are_404(client: Any, token: str) -> None:
    response = await client.get(f"/api/v1/status/{token}")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"


async def test_tampered_and_foreign_tokens_are_404(
    partner: Partner, client: Any, config: dict[str, Any], clock: FakeClock
) -> None:
    token = await partner.token()
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert (await client.get(f"/api/v1/status/{tampered}")).status_code == 404
    payload, stamp, signature = token.split(".")
    forged = "InBzXzIi" + "." + stamp + "." + signature  # "ps_2" under ps_1's signature
    assert (await client.get(f"/api/v1/status/{forged}")).status_code == 404
    other = create_app({**config, "SECRET_KEY": "another-secret-0123456789"}, clock=clock)
    foreign = other.extensions["bridge"].tokens.mint("ps_1").token
    assert (await client.get(f"/api/v1/status/{foreign}")).status_code == 404


async def test_a_value_signed_with_the_secret_in_no_token_shape_is_404_everywhere(
    partner: Partner, client: Any, app: Any
) -> None:
    """Signed as tokens are, but neither a session id nor [session id, return URL]: every route
    that reads a token answers 404, never an error."""
    await partner.token()  # ps_1 is known
    signer = app.extensions["bridge"].tokens._serializer
    for value in (["ps_1"], ["ps_1", None], {"session_id": "ps_1"}, 7, None):
        token = signer.dumps(value)
        for path in ("/pay/{}", "/pay/{}/return", "/api/v1/status/{}", "/api/v1/status/{}/events"):
            assert (await client.get(path.format(token))).status_code == 404, (value, path)


async def test_expired_tokens_are_404(partner: Partner, client: Any, clock: FakeClock) -> None:
    token = await partner.token()
    clock.advance(21600)
    assert (await client.get(f"/api/v1/status/{token}")).status_code == 200
    clock.advance(1)
    assert (await client.get(f"/api/v1/status/{token}")).status_code == 404


async def test_secret_rotation_last_signs_all_verify(
    config: dict[str, Any], clock: FakeClock
) -> None:
    old = create_app({**config, "SECRET_KEY": "old-secret-0123456789"}, clock=clock)
    token = old.extensions["bridge"].tokens.mint("ps_1").token
    rotated = create_app(
        {**config, "SECRET_KEY": '["old-secret-0123456789", "new-secret-0123456789"]'},
        clock=clock,
    )
    async with rotated.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get(f"/api/v1/status/{token}")).status_code == 200
        new = rotated.extensions["bridge"].tokens.mint("ps_1").token
    assert old.extensions["bridge"].tokens.read(new) is None
    assert rotated.extensions["bridge"].tokens.read(new).session_id == "ps_1"


async def test_long_poll_returns_when_the_status_changes(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    waiting = asyncio.create_task(client.get(f"/api/v1/status/{token}?wait=10"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await provider.deliver("action_required")
    response = await asyncio.wait_for(waiting, timeout=2)
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "action_required"


async def test_long_poll_with_a_stale_etag_answers_at_once(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    etag = (await client.get(f"/api/v1/status/{token}")).headers["ETag"]
    await provider.deliver("action_required")
    response = await asyncio.wait_for(
        client.get(f"/api/v1/status/{token}?wait=30", headers={"If-None-Match": etag}), timeout=2
    )
    assert response.status_code == 200


async def test_long_poll_with_the_current_etag_waits_then_answers_304(
    partner: Partner, client: Any
) -> None:
    token = await partner.token()
    etag = (await client.get(f"/api/v1/status/{token}")).headers["ETag"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.get(f"/api/v1/status/{token}?wait=1", headers={"If-None-Match": etag})
    assert response.status_code == 304
    assert loop.time() - started >= 0.9


async def test_long_poll_ignores_writes_that_change_nothing(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("payment_finished", session_status="accepted")
    waiting = asyncio.create_task(client.get(f"/api/v1/status/{token}?wait=1"))
    await asyncio.sleep(0.1)
    await provider.deliver("action_required")  # late: ignored, the answer stays the same
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert (await waiting).status_code == 200


@pytest.mark.parametrize("wait", ["31", "-1", "soon", "1.5"])
async def test_wait_out_of_range_is_400(partner: Partner, client: Any, wait: str) -> None:
    token = await partner.token()
    response = await client.get(f"/api/v1/status/{token}?wait={wait}")
    assert response.status_code == 400
    assert (await response.get_json())["error"]["code"] == "invalid_request"


# --- documentation and operators ------------------------------------------------------------


async def test_openapi_documents_the_json_api(client: Any) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    paths = document["paths"]
    assert set(paths) >= {
        "/api/v1/sessions/{session_id}/tokens",
        "/api/v1/sessions/{session_id}",
        "/api/v1/status/{token}",
        "/webhooks/smart-glocal",
    }
    status = paths["/api/v1/status/{token}"]["get"]
    assert any(parameter["name"] == "wait" for parameter in status["parameters"])
    assert "/pay/{token}" not in paths


async def test_health_and_readiness(client: Any, app: Any) -> None:
    assert (await (await client.get("/healthz")).get_json()) == {"status": "ok"}
    assert (await client.get("/readyz")).status_code == 200
    await app.extensions["bridge"].store.close()
    response = await client.get("/readyz")
    assert response.status_code == 503


async def test_unknown_api_paths_answer_json_errors(client: Any) -> None:
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"
    response = await client.get("/webhooks/smart-glocal")
    assert response.status_code == 405
    assert (await response.get_json())["error"]["code"] == "method_not_allowed"


async def test_the_status_api_answers_any_origin_and_exposes_its_etag(
    partner: Partner, client: Any
) -> None:
    token = await partner.token()
    origin = {"Origin": "https://shop.test"}
    preflight = await client.options(
        f"/api/v1/status/{token}",
        headers={
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "if-none-match",
        },
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "if-none-match" in preflight.headers["Access-Control-Allow-Headers"].lower()
    answer = await client.get(f"/api/v1/status/{token}", headers=origin)
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "etag" in answer.headers["Access-Control-Expose-Headers"].lower()
    missing = await client.get("/api/v1/status/bad-token", headers=origin)
    assert missing.status_code == 404
    assert missing.headers["Access-Control-Allow-Origin"] == "*"


async def test_partner_endpoints_do_not_answer_browsers_of_other_origins(
    partner: Partner, client: Any
) -> None:
    response = await client.get(
        "/api/v1/sessions/ps_1", headers={**partner.headers, "Origin": "https://shop.test"}
    )
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_weak_if_none_match_is_honoured(partner: Partner, client: Any) -> None:
    token = await partner.token()
    etag = (await client.get(f"/api/v1/status/{token}")).headers["ETag"]
    response = await client.get(f"/api/v1/status/{token}", headers={"If-None-Match": f"W/{etag}"})
    assert response.status_code == 304


async def test_a_bad_token_is_404_whatever_the_query_says(client: Any) -> None:
    response = await client.get("/api/v1/status/garbage?wait=99")
    assert response.status_code == 404


async def test_a_session_never_stored_has_a_stable_etag(app: Any, client: Any) -> None:
    token = app.extensions["bridge"].tokens.mint("ps_not_stored").token
    first = await client.get(f"/api/v1/status/{token}")
    second = await client.get(f"/api/v1/status/{token}")
    assert (await first.get_json())["status"] == "pending"
    assert first.headers["ETag"] == second.headers["ETag"]
    held = await client.get(
        f"/api/v1/status/{token}?wait=1", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert held.status_code == 304


async def test_long_poll_wakes_for_a_new_action_with_the_same_status(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    from .payloads import redirect

    token = await partner.token()
    await provider.deliver("action_required")
    etag = (await client.get(f"/api/v1/status/{token}")).headers["ETag"]
    waiting = asyncio.create_task(
        client.get(f"/api/v1/status/{token}?wait=10", headers={"If-None-Match": etag})
    )
    await asyncio.sleep(0.1)
    clock.advance(5)
    await provider.deliver("action_required", interaction=redirect(params={"creq": "new"}))
    response = await asyncio.wait_for(waiting, timeout=2)
    assert response.status_code == 200
    assert (await response.get_json())["status"] == "action_required"
    assert response.headers["ETag"] != etag


async def test_a_long_poll_holds_while_the_status_is_any_etag_offered(
    partner: Partner, client: Any
) -> None:
    token = await partner.token()
    etag = (await client.get(f"/api/v1/status/{token}")).headers["ETag"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.get(
        f"/api/v1/status/{token}?wait=1", headers={"If-None-Match": f'"stale", {etag}'}
    )
    assert response.status_code == 304
    assert loop.time() - started >= 0.9
