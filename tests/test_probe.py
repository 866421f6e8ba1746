"""A signed test message to the partner's relay endpoint on demand: the API call and the
command, against a real recording partner on loopback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from .conftest import RELAY_SECRET, Configured, public_pem
from .database import query
from .partner import Partner, recording_partner
from .servers import environment, free_port


@pytest.fixture
def partner_backend() -> Iterator[Partner]:
    with recording_partner() as backend:
        yield backend


async def test_the_api_sends_a_signed_test_message_and_says_what_came_back(
    configured: Configured, partner_backend: Partner, database_url: str
) -> None:
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        headers = bridge.partner.headers
        answer = await bridge.client.post("/api/v1/relay/test", headers=headers)
        assert answer.status_code == 200
        said = await answer.get_json()
        assert (said["delivered"], said["status"], said["error"]) == (True, 200, None)
        (received,) = partner_backend.received
        assert received.headers["webhook-id"] == said["message_id"]
        assert received.headers["x-bridge-delivery-id"] == said["message_id"]
        event = Webhook(RELAY_SECRET).verify(received.body, received.headers)
        assert event["type"] == "relay.test" and "message" in event["data"]
        assert "x-partner-sign" not in received.headers
        partner_backend.answer = lambda received: 401
        refused = await (await bridge.client.post("/api/v1/relay/test", headers=headers)).get_json()
        assert (refused["delivered"], refused["status"]) == (False, 401)
        assert (await bridge.client.post("/api/v1/relay/test")).status_code == 401
    assert await query(database_url, "SELECT count(*) FROM deliveries") == [(0,)]  # not stored


async def test_no_relay_no_answer(configured: Configured) -> None:
    async with configured() as bridge:
        off = await bridge.client.post("/api/v1/relay/test", headers=bridge.partner.headers)
        assert off.status_code == 409
        assert (await off.get_json())["error"]["code"] == "relay_off"
    nobody = f"http://127.0.0.1:{free_port()}/hook"
    async with configured(RELAY_URL=nobody, RELAY_TIMEOUT=2) as bridge:
        answer = await bridge.client.post("/api/v1/relay/test", headers=bridge.partner.headers)
        said = await answer.get_json()
        assert (said["delivered"], said["status"]) == (False, None)
        assert said["error"]


def relay_test(settings: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "redirect-bridge"
    return subprocess.run(
        [str(script), "relay-test"],
        env=environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_command_checks_the_endpoint_before_the_first_payment(
    partner_backend: Partner, provider_key: Any
) -> None:
    settings = {
        "SECRET_KEY": "s" * 32,
        "SG_PUBLIC_KEY": public_pem(provider_key),
        "RELAY_URL": partner_backend.url.replace("://", "://user:PASSWORD-x@") + "?token=QUERY-x",
    }
    sent = relay_test(settings)
    assert sent.returncode == 0, sent.stderr
    (received,) = partner_backend.received
    message_id = received.headers["webhook-id"]
    assert f"sent relay.test {message_id} to http://***@127.0.0.1:" in sent.stdout
    assert "answer: HTTP 200" in sent.stdout
    assert "PASSWORD-x" not in sent.stdout + sent.stderr
    assert "QUERY-x" not in sent.stdout + sent.stderr
    assert Webhook(RELAY_SECRET).verify(received.body, received.headers)["type"] == "relay.test"
    partner_backend.answer = lambda received: 500
    assert relay_test(settings).returncode == 1
    without = {name: value for name, value in settings.items() if name != "RELAY_URL"}
    off = relay_test(without)
    assert off.returncode == 2 and "BRIDGE_RELAY_URL is not set" in off.stderr


async def test_what_went_wrong_names_no_credential(
    configured: Configured, partner_backend: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error of a test message goes to any partner key's holder and to a terminal: the
    proxy's credentials and the relay URL's userinfo and query stay out of it."""
    proxy = partner_backend.url.removesuffix("/smart-glocal").replace("://", "://op:PROXYPASS@")
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.setenv("https_proxy", proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    relay = "https://user:URLPASS@partner.invalid/hook?token=URLTOKEN"
    async with configured(RELAY_URL=relay) as bridge:
        answer = await bridge.client.post("/api/v1/relay/test", headers=bridge.partner.headers)
        said = await answer.get_json()
    assert said["delivered"] is False and said["error"]
    for secret in ("PROXYPASS", "URLPASS", "URLTOKEN"):
        assert secret not in said["error"], said["error"]
