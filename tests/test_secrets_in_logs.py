"""Secrets, PaReq, MD and card numbers planted in a run never appear in its logs.

One whole journey (tokens, a bank step carrying planted PaReq and MD and a full card number
where none is expected, the pay page, a bad token, a bad signature, a bad API key, a refused
bank URL, the return with the bank's answer, the final webhook, a long-poll, an event stream,
metrics) runs twice: in-process with every log record captured at DEBUG, and against a real
``redirect-bridge serve`` whose JSON logs on stderr are read back whole.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app import status_service
from app.signature import sign

from .conftest import API_KEY, Configured, public_pem
from .payloads import redirect, webhook
from .servers import Client, Served, environment

PAREQ = "eJxVUk1vgkAQ+PlANTEDpareq/7c1e9a=="
MD = "MD-planted-8b14d0c5f2"
PAN = "4111111111111111"
PARES = "PaRes-planted-e2f90a7b"
BANK_HOST = "acs.planted-bank.test"
BANK_URL = f"https://{BANK_HOST}/3ds/challenge?txn=planted-txn-91"
REFUSED_HOST = "refused-bank.test"
REFUSED_URL = f"http://{REFUSED_HOST}/acs?step=planted-refused"
WRONG_KEY = "wrong-partner-key-planted-0042"
SESSION = "ps_secrets"
REFUSED_SESSION = "ps_refused"
TOKEN = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{20,}")


def card_webhook(kind: str, session_id: str, **fields: Any) -> dict[str, Any]:
    """A webhook with a full card number in ``payment_details.card`` and in a field of its own."""
    payload = webhook(kind, session_id, **fields)
    payment = payload["session"]["acquiring_payments"][0]
    payment["payment_details"]["card"].update({"number": PAN, "pan": PAN, "holder": "J DOE"})
    payment["customer"]["reference"] = f"card {PAN}"
    payload["debug"] = {"card_number": PAN, "cvv": "737"}
    return payload


def action_required(session_id: str = SESSION, url: str = BANK_URL) -> dict[str, Any]:
    params = {"PaReq": PAREQ, "MD": MD, "TermUrl": "https://provider.test/term"}
    return card_webhook(
        "action_required", session_id, interaction=redirect(url=url, base_url=None, params=params)
    )


def planted(secret_key: str, api_key: str) -> list[str]:
    return [
        PAREQ,
        MD,
        PAN,
        PARES,
        BANK_URL,
        BANK_HOST,
        REFUSED_URL,
        REFUSED_HOST,
        WRONG_KEY,
        secret_key,
        api_key,
    ]


def tokens_in(*texts: str) -> set[str]:
    """Every customer token in ``texts``, and each one's signature on its own."""
    found = {match for text in texts for match in TOKEN.findall(text)}
    return found | {token.rsplit(".", 1)[1] for token in found}


def leaks(log: str, secrets: set[str]) -> list[str]:
    return sorted(secret for secret in secrets if secret and secret in log)


# --- in-process, every record at DEBUG --------------------------------------------------------


async def test_no_planted_secret_reaches_a_log_record(
    configured: Configured,
    config: dict[str, Any],
    provider_key: rsa.RSAPrivateKey,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(status_service, "STREAM_SECONDS", 0.3)  # the event stream ends by itself
    monkeypatch.setattr(status_service, "KEEP_ALIVE_SECONDS", 0.1)
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []

    async with configured() as bridge:
        client = bridge.client
        bearer = {"Authorization": f"Bearer {API_KEY}"}

        async def call(method: str, path: str, expected: int, **kwargs: Any) -> Any:
            response = await client.open(path, method=method, **kwargs)
            text = await response.get_data(as_text=True)
            answers.append(text + str(response.headers))
            assert response.status_code == expected, (method, path, text[:300])
            return response

        async def send(payload: dict[str, Any], expected: int = 200, signature: str = "") -> None:
            body = json.dumps(payload).encode()
            headers = {"X-PARTNER-SIGN": signature or sign(provider_key, body)}
            await call("POST", "/webhooks/smart-glocal", expected, data=body, headers=headers)

        minted = await call("POST", f"/api/v1/sessions/{SESSION}/tokens", 201, headers=bearer)
        token = (await minted.get_json())["token"]
        await call(
            "POST",
            f"/api/v1/sessions/{SESSION}/tokens",
            401,
            headers={"Authorization": f"Bearer {WRONG_KEY}"},
        )
        await call("GET", f"/pay/{token}", 200)  # waiting page
        await call("POST", f"/pay/{token}/claim", 200, json={"page": "p" * 32})
        handoff = await call("POST", f"/pay/{token}/handoff", 201)
        link = urllib.parse.urlsplit((await handoff.get_json())["handoff_url"]).path
        await call("GET", link, 200)
        await call("POST", link, 303, form={"page": "q" * 32})  # another browser's token
        await call("GET", link, 410)
        handoff_secret = link.rsplit("/", 1)[1]
        await send(action_required())
        page = await call("GET", f"/pay/{token}", 200)
        assert PAREQ in await page.get_data(as_text=True)  # the page does carry it
        before = await call("GET", f"/api/v1/status/{token}", 200)
        await call("GET", f"/api/v1/sessions/{SESSION}", 200, headers=bearer)

        await call("GET", f"/pay/{token}x", 404)  # a bad token
        await call("GET", f"/api/v1/status/{token[:-2]}", 404)
        await send(action_required(), 401, signature=sign(provider_key, b"other bytes"))
        await send({**action_required(), "session": {"id": f"bad {PAN}"}}, 422)

        refused = (
            await (
                await call(
                    "POST", f"/api/v1/sessions/{REFUSED_SESSION}/tokens", 201, headers=bearer
                )
            ).get_json()
        )["token"]
        await send(action_required(REFUSED_SESSION, REFUSED_URL))
        await call("GET", f"/pay/{refused}", 502)

        await call("POST", f"/pay/{token}/return", 200, form={"PaRes": PARES, "MD": MD})
        await call("GET", f"/pay/{token}/return?PaRes={PARES}&MD={MD}", 200)
        etag = before.headers["ETag"]
        poll = asyncio.ensure_future(
            client.get(f"/api/v1/status/{token}?wait=10", headers={"If-None-Match": etag})
        )
        await asyncio.sleep(0.05)
        await send(card_webhook("payment_finished", SESSION, session_status="accepted"))
        woken = await asyncio.wait_for(poll, 10)
        assert (await woken.get_json())["status"] == "succeeded"
        answers.append(await woken.get_data(as_text=True))
        events = await call("GET", f"/api/v1/status/{token}/events", 200)
        assert "event: status" in await events.get_data(as_text=True)
        await call("GET", f"/pay/{token}", 200)
        await call("GET", f"/api/v1/sessions/{SESSION}", 200, headers=bearer)
        for path in ("/metrics", "/healthz", "/readyz", "/openapi.json"):
            await call("GET", path, 200)

    records = caplog.records
    messages = [record.getMessage() for record in records]
    assert any("webhook accepted" in m for m in messages), messages
    assert any("webhook refused" in m for m in messages), messages
    assert any("refused the bank instruction" in m for m in messages), messages

    secrets = set(planted(config["SECRET_KEY"], API_KEY)) | tokens_in(*answers)
    secrets.add(handoff_secret)
    assert token in secrets and refused in secrets
    log = caplog.text + "\n".join(messages) + "\n".join(repr(r.args) for r in records)
    assert leaks(log, secrets) == []


# --- a real `redirect-bridge serve`, its stderr read whole ------------------------------------


def first_event(port: int, path: str) -> str:
    """Read an event stream until its first status event, then hang up."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        lines: list[str] = []
        while not any(line.startswith("data:") for line in lines):
            lines.append(response.readline().decode())
        return "".join(lines)
    finally:
        connection.close()


@pytest.fixture
def served(
    database_url: str, provider_key: rsa.RSAPrivateKey, tmp_path: Path
) -> Iterator[tuple[Served, dict[str, str]]]:
    secrets = {
        "secret_key": "serve-secret-key-planted-5a7c9e1b-0123456789",
        "api_key": "serve-api-key-planted-2d4f",
    }
    settings = environment(
        DATABASE_URL=database_url,
        SECRET_KEY=secrets["secret_key"],
        SG_PUBLIC_KEY=public_pem(provider_key),
        API_KEYS=json.dumps([secrets["api_key"]]),
    )
    server = Served(settings, workers=2, log=tmp_path / "serve.log").start()
    try:
        yield server, secrets
    finally:
        server.stop()


def test_no_planted_secret_reaches_the_served_logs(
    served: tuple[Served, dict[str, str]], provider_key: rsa.RSAPrivateKey
) -> None:
    server, keys = served
    client = Client(server.url, provider_key, keys["api_key"])
    answers: list[str] = []
    bearer = {"Authorization": f"Bearer {keys['api_key']}"}

    def call(
        method: str,
        path: str,
        expected: int,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        status, answer_headers, body = client.call(method, path, data, headers)
        answers.append(body.decode() + str(answer_headers))
        assert status == expected, (method, path, body[:300])
        return status, answer_headers, body.decode()

    def send(payload: dict[str, Any], expected: int = 200, signature: str = "") -> None:
        body, headers = client.signed(payload)
        if signature:
            headers["X-PARTNER-SIGN"] = signature
        call("POST", "/webhooks/smart-glocal", expected, data=body, headers=headers)

    token = json.loads(call("POST", f"/api/v1/sessions/{SESSION}/tokens", 201, headers=bearer)[2])[
        "token"
    ]
    call(
        "POST",
        f"/api/v1/sessions/{SESSION}/tokens",
        401,
        headers={"Authorization": f"Bearer {WRONG_KEY}"},
    )
    call("GET", f"/pay/{token}", 200)
    send(action_required())
    assert PAREQ in call("GET", f"/pay/{token}", 200)[2]
    etag = call("GET", f"/api/v1/status/{token}", 200)[1]["etag"]
    call("GET", f"/api/v1/sessions/{SESSION}", 200, headers=bearer)

    call("GET", f"/pay/{token}x", 404)
    call("GET", f"/api/v1/status/{token[:-2]}?wait=1", 404)
    send(action_required(), 401, signature=sign(provider_key, b"other bytes"))
    send({**action_required(), "session": {"id": f"bad {PAN}"}}, 422)
    answers.append(first_event(server.port, f"/api/v1/status/{token}/events"))

    refused_answer = call("POST", f"/api/v1/sessions/{REFUSED_SESSION}/tokens", 201, headers=bearer)
    refused = json.loads(refused_answer[2])["token"]
    send(action_required(REFUSED_SESSION, REFUSED_URL))
    call("GET", f"/pay/{refused}", 502)

    form = urllib.parse.urlencode({"PaRes": PARES, "MD": MD}).encode()
    call(
        "POST",
        f"/pay/{token}/return",
        200,
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    call("GET", f"/pay/{token}/return?PaRes={PARES}&MD={MD}", 200)

    woken: list[tuple[int, dict[str, str], str]] = []
    poll = threading.Thread(
        target=lambda: woken.append(
            call("GET", f"/api/v1/status/{token}?wait=10", 200, headers={"If-None-Match": etag})
        )
    )
    poll.start()
    time.sleep(0.2)
    send(card_webhook("payment_finished", SESSION, session_status="accepted"))
    poll.join(timeout=15)
    assert woken and json.loads(woken[0][2])["status"] == "succeeded"
    call("GET", f"/api/v1/sessions/{SESSION}", 200, headers=bearer)
    for path in ("/metrics", "/healthz", "/readyz", "/openapi.json"):
        call("GET", path, 200)
    server.stop()  # every worker has written and flushed its last line

    assert server.log is not None
    log = server.log.read_text(errors="replace")
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    messages = [entry.get("message", "") for entry in entries]
    assert any("webhook accepted" in m for m in messages), log[-3000:]
    assert any("webhook refused" in m for m in messages), log[-3000:]
    assert any("refused the bank instruction" in m for m in messages), log[-3000:]

    secrets = set(planted(keys["secret_key"], keys["api_key"])) | tokens_in(*answers)
    assert token in secrets and refused in secrets
    decoded = "\n".join(json.dumps(entry, ensure_ascii=False) for entry in entries)
    assert leaks(log + decoded, secrets) == []


# --- the relay's URL at start-up --------------------------------------------------------------

RELAY_PASSWORD = "relay-password-planted-3c1e"
RELAY_SECRET = "relay-query-secret-planted-9f0d"
RELAY_URL = f"https://user:{RELAY_PASSWORD}@partner.example/hook?token={RELAY_SECRET}"


async def test_the_relay_url_is_logged_without_its_credentials(
    configured: Configured, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with configured(RELAY_URL=RELAY_URL):
        pass
    messages = [record.getMessage() for record in caplog.records]
    assert "relaying every accepted webhook to https://***@partner.example/hook?***" in messages
    assert leaks(caplog.text + "\n".join(messages), {RELAY_PASSWORD, RELAY_SECRET, "user:"}) == []


def test_the_relay_url_is_logged_without_its_credentials_by_serve(
    provider_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    settings = environment(
        DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.sqlite3'}",
        SECRET_KEY="serve-secret-key-for-the-relay-url-0123456789",
        SG_PUBLIC_KEY=public_pem(provider_key),
        RELAY_URL=RELAY_URL,
    )
    server = Served(settings, log=tmp_path / "serve.log").start()
    server.stop()
    assert server.log is not None
    log = server.log.read_text(errors="replace")
    assert "relaying every accepted webhook to https://***@partner.example/hook?***" in log
    assert leaks(log, {RELAY_PASSWORD, RELAY_SECRET, "user:"}) == []
