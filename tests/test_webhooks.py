from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign

from .conftest import Configured, Partner, Provider, public_pem
from .database import query
from .payloads import webhook


async def stored(config: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What is on disk, read with a separate connection: (webhook log, sessions)."""
    url = config["DATABASE_URL"]
    log = await query(url, "SELECT session_id, type, body FROM webhooks ORDER BY id")
    sessions = await query(url, "SELECT session_id, status, reason FROM sessions")
    return log, sessions


async def test_accepts_a_signed_webhook_and_stores_it_before_answering(
    provider: Provider, config: dict[str, Any]
) -> None:
    body = json.dumps(webhook("action_required", "ps_3230")).encode()
    response = await provider.send(body)
    assert response.status_code == 200
    assert await response.get_json() == {"status": "accepted"}
    log, sessions = await stored(config)
    assert log == [("ps_3230", "action_required", body)]
    assert sessions == [("ps_3230", "action_required", None)]


async def test_the_same_bytes_again_are_a_duplicate_that_changes_nothing(
    provider: Provider, config: dict[str, Any]
) -> None:
    body = json.dumps(webhook("action_required")).encode()
    assert await (await provider.send(body)).get_json() == {"status": "accepted"}
    again = await provider.send(body)
    assert again.status_code == 200
    assert await again.get_json() == {"status": "duplicate"}
    log, _ = await stored(config)
    assert len(log) == 1


async def test_same_content_with_other_bytes_is_stored_but_changes_nothing(
    provider: Provider, partner: Partner, config: dict[str, Any]
) -> None:
    payload = webhook("action_required")
    await provider.send(json.dumps(payload).encode())
    before = await (await partner.session()).get_json()
    response = await provider.send(json.dumps(payload, indent=2).encode())
    assert await response.get_json() == {"status": "accepted"}
    assert await (await partner.session()).get_json() == before
    assert len((await stored(config))[0]) == 2


async def test_a_late_action_required_cannot_bring_a_finished_session_back(
    provider: Provider, partner: Partner
) -> None:
    await provider.deliver("payment_finished", session_status="accepted")
    await provider.deliver("action_required")
    answer = await (await partner.session()).get_json()
    assert answer["status"] == "succeeded"
    assert answer["action"] is None


async def test_api_v2_payment_list_is_read(provider: Provider, partner: Partner) -> None:
    await provider.deliver("action_required", api="v2")
    answer = await (await partner.session()).get_json()
    assert answer["status"] == "action_required"
    assert answer["payments"][0]["id"] == "pm_1313"


async def test_unknown_types_and_fields_are_stored_and_answered_200(
    provider: Provider, config: dict[str, Any]
) -> None:
    payload = webhook("payout_finished", "ps_9", surprise={"nested": [1, 2]})
    payload["session"]["brand_new_field"] = True
    response = await provider.send(payload)
    assert response.status_code == 200
    assert await response.get_json() == {"status": "accepted"}
    log, sessions = await stored(config)
    assert [(row[0], row[1]) for row in log] == [("ps_9", "payout_finished")]
    assert sessions == [("ps_9", "pending", None)]


async def test_missing_signature_is_401_and_stores_nothing(
    client: Any, config: dict[str, Any]
) -> None:
    body = json.dumps(webhook("action_required")).encode()
    response = await client.post(
        "/webhooks/smart-glocal", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401
    error = (await response.get_json())["error"]
    assert error["code"] == "invalid_signature"
    assert error["message"]
    assert (await stored(config)) == ([], [])


async def test_signature_over_other_bytes_is_401(
    provider: Provider, config: dict[str, Any]
) -> None:
    body = json.dumps(webhook("payment_finished")).encode()
    forged = sign(provider.key, body.replace(b"succeeded", b"failed!!!"))
    response = await provider.send(body, signature=forged)
    assert response.status_code == 401
    assert (await stored(config)) == ([], [])


async def test_signature_from_another_key_is_401(provider: Provider) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = json.dumps(webhook("payment_finished")).encode()
    response = await provider.send(body, signature=sign(stranger, body))
    assert response.status_code == 401


async def test_signature_that_is_not_base64_is_401(provider: Provider) -> None:
    response = await provider.send(webhook("payment_finished"), signature="not base64 !!")
    assert response.status_code == 401
    response = await provider.send(
        webhook("payment_finished"), signature=base64.b64encode(b"x").decode()
    )
    assert response.status_code == 401


async def test_the_signature_is_checked_before_the_body_is_parsed(provider: Provider) -> None:
    response = await provider.send(b"{not json", signature="AAAA")
    assert response.status_code == 401


async def test_signed_body_that_is_not_json_is_400(
    provider: Provider, config: dict[str, Any]
) -> None:
    for body in (b"{not json", b"\xff\xfe\x00garbage", b""):
        response = await provider.send(body)
        assert response.status_code == 400, body
        assert (await response.get_json())["error"]["code"] == "invalid_json"
    assert (await stored(config)) == ([], [])


async def test_json_that_is_not_a_webhook_is_422(
    provider: Provider, config: dict[str, Any]
) -> None:
    for document in (
        [],
        {"session": {"id": "ps_1"}},
        {"type": "action_required"},
        {"type": "action_required", "session": {}},
        {"type": "action_required", "session": {"id": 42}},
        "text",
    ):
        response = await provider.send(json.dumps(document).encode())
        assert response.status_code == 422, document
        body = await response.get_json()
        assert body["error"]["code"] == "not_a_webhook"
    assert (await stored(config)) == ([], [])


async def test_body_over_the_limit_is_413(provider: Provider, config: dict[str, Any]) -> None:
    payload = webhook("action_required", padding="x" * (64 * 1024))
    response = await provider.send(payload)
    assert response.status_code == 413
    assert (await response.get_json())["error"]["code"] == "body_too_large"
    assert (await stored(config)) == ([], [])


async def test_the_body_limit_is_configurable(configured: Configured) -> None:
    async with configured(WEBHOOK_MAX_BYTES="2048") as bridge:
        small = await bridge.provider.send(webhook("action_required", padding="x" * 1000))
        large = await bridge.provider.send(webhook("action_required", padding="x" * 2048))
    assert (small.status_code, large.status_code) == (200, 413)


async def test_any_of_several_rotated_keys_verifies(
    configured: Configured, provider_key: rsa.RSAPrivateKey
) -> None:
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with configured(SG_PUBLIC_KEY=public_pem(old) + public_pem(provider_key)) as bridge:
        for number, key in enumerate((old, provider_key)):
            sender = Provider(bridge.client, key)
            response = await sender.send(webhook("action_required", f"ps_{number}"))
            assert response.status_code == 200


async def test_a_refused_bank_url_is_still_stored_and_answered_200(
    provider: Provider, partner: Partner
) -> None:
    from .payloads import redirect

    response = await provider.send(
        webhook("action_required", interaction=redirect(url="http://acs.bank.test/", base_url=None))
    )
    assert response.status_code == 200
    assert (await (await partner.session()).get_json())["status"] == "action_required"


async def test_webhooks_are_counted_in_metrics(provider: Provider, client: Any) -> None:
    await provider.deliver("action_required")
    await provider.send(webhook("action_required"), signature="AAAA")
    text = await (await client.get("/metrics")).get_data(as_text=True)
    assert 'bridge_webhooks_total{outcome="accepted",type="action_required"} 1.0' in text
    assert 'bridge_webhooks_total{outcome="invalid_signature",type="none"} 1.0' in text
    assert 'bridge_status_transitions_total{status="action_required"} 1.0' in text


async def test_a_lone_surrogate_anywhere_is_422_and_stores_nothing(
    provider: Provider, config: dict[str, Any]
) -> None:
    template = json.dumps(webhook("action_required", "ps_SURROGATE"))
    for target in ('"ps_SURROGATE"', '"action_required"', '"abc75daefnn"'):
        body = template.replace(target, target[:-1] + '\\ud800"').encode()
        response = await provider.send(body)
        assert response.status_code == 422, target
        assert (await response.get_json())["error"]["code"] == "not_a_webhook"
    assert (await stored(config)) == ([], [])


async def test_json_nested_too_deeply_is_400(provider: Provider) -> None:
    response = await provider.send(b"[" * 30000 + b"]" * 30000)
    assert response.status_code == 400
    assert (await response.get_json())["error"]["message"] == "the JSON is nested too deeply"


async def test_every_webhook_makes_its_session_known(provider: Provider, partner: Partner) -> None:
    await provider.deliver("payout_finished", "ps_unknown_kind")
    answer = await (await partner.session("ps_unknown_kind")).get_json()
    assert answer["status"] == "pending"


@pytest.mark.parametrize(
    ("kind", "fields", "status", "reason"),
    [
        ("ready_to_confirm", {}, "in_progress", None),
        ("ready_to_capture", {}, "authorized", None),
        ("payment_finished", {"session_status": "accepted"}, "succeeded", None),
        ("payment_finished", {"session_status": "cancelled"}, "canceled", None),
        (
            "payment_finished",
            {"payment_status": "failed", "error_code": "no_funds"},
            "failed",
            "no_funds",
        ),
        ("payment_finished", {"session_status": "error", "error_code": "x"}, "error", "x"),
        ("payment_refunded", {}, "refunded", None),
    ],
)
async def test_each_webhook_type_moves_the_session_as_the_readme_maps_it(
    provider: Provider,
    partner: Partner,
    kind: str,
    fields: dict[str, Any],
    status: str,
    reason: str | None,
) -> None:
    await provider.deliver("action_required")
    await provider.deliver(kind, **fields)
    answer = await (await partner.session()).get_json()
    assert (answer["status"], answer["reason"]) == (status, reason)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
async def test_nan_and_infinity_are_not_json(provider: Provider, constant: bytes) -> None:
    body = b'{"type": "ready_to_confirm", "session": {"id": "ps_1", "n": ' + constant + b"}}"
    answer = await provider.send(body)
    assert answer.status_code == 400
    assert (await answer.get_json())["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        # The widget's order, all at one provider second, then the first retried anew.
        (["action_required", "ready_to_confirm", "action_required"], "in_progress"),
        # Confirm-first, all at one second, then the first retried anew.
        (["ready_to_confirm", "action_required", "ready_to_confirm"], "action_required"),
    ],
)
async def test_a_copy_serialised_anew_is_no_news_even_at_the_same_provider_time(
    provider: Provider, partner: Partner, history: list[str], expected: str
) -> None:
    """Times to the second tie often; a retry of an earlier event, its keys in another order,
    must not bring its status back."""
    sent: dict[str, dict[str, Any]] = {}
    for kind in history:
        payload = sent.get(kind) or webhook(kind, updated_at="2027-01-15T07:00:00.000000Z")
        body = payload if kind not in sent else dict(reversed(list(payload.items())))
        sent[kind] = payload
        answer = await provider.send(body)
        assert await answer.get_json() == {"status": "accepted"}
    session = await (await partner.session()).get_json()
    assert session["status"] == expected
