"""The simulated Smart Glocal: webhook bodies shaped like the real ones, signed and sent."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from ..signature import HEADER, sign

log = logging.getLogger(__name__)

AMOUNT = 15000  # minor units: 150.00
CURRENCY = "usd"


class Provider:
    """Signs each webhook body with the provider's private key and POSTs it to the bridge."""

    def __init__(self, key: RSAPrivateKey, webhook_url: str) -> None:
        self.key = key
        self.webhook_url = webhook_url

    async def send(self, webhook: Mapping[str, Any]) -> None:
        body = json.dumps(webhook).encode()
        headers = {"Content-Type": "application/json", HEADER: sign(self.key, body)}
        try:
            status, answer = await post(self.webhook_url, body, headers)
        except OSError as error:
            log.warning("provider: could not deliver %s: %s", webhook["type"], error)
            return
        log.info(
            "provider: sent %s for %s, the bridge answered %d %s",
            webhook["type"],
            webhook["session"]["id"],
            status,
            answer.decode(errors="replace").strip(),
        )


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """POST ``body`` and return the status and body of the answer (error statuses included)."""
    return await asyncio.to_thread(_post, url, body, dict(headers))


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def action_required(
    session_id: str, payment_id: str, created_at: str, redirect: Mapping[str, Any]
) -> dict[str, Any]:
    interaction = {"type": "redirect", "redirect": dict(redirect)}
    payment = _payment(payment_id, "pending", created_at, customer_interaction=interaction)
    return _webhook("action_required", session_id, "in_progress", created_at, payment)


def payment_finished(
    session_id: str, payment_id: str, created_at: str, *, approved: bool
) -> dict[str, Any]:
    if approved:
        payment = _payment(payment_id, "succeeded", created_at, finished_at=now())
        return _webhook("payment_finished", session_id, "accepted", created_at, payment)
    error = {"code": "declined_by_issuer", "description": "The issuer declined the payment"}
    payment = _payment(payment_id, "failed", created_at, finished_at=now(), error=error)
    return _webhook("payment_finished", session_id, "in_progress", created_at, payment)


def pareq(session_id: str) -> str:
    """A 3-D Secure 1 PaReq as ACSes receive it: deflated XML, base64 (``+``, ``/``, ``=``)."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><ThreeDSecure><Message id="'
        + secrets.token_hex(8)
        + '"><PAReq><version>1.0.2</version><Merchant><acqBIN>444600</acqBIN>'
        "<merID>DEMO-SHOP-01</merID><name>Demo Shop</name><country>840</country>"
        "<url>https://shop.example</url></Merchant><Purchase><xid>"
        + base64.b64encode(secrets.token_bytes(20)).decode()
        + f"</xid><date>{datetime.now(UTC):%Y%m%d %H:%M:%S}</date>"
        f"<amount>150.00 USD</amount><purchAmount>{AMOUNT}</purchAmount><currency>840</currency>"
        f"<exponent>2</exponent><desc>{session_id}</desc></Purchase><CH><acctID>"
        "NDQ0NjAwKioqKioqODgwMQ==</acctID><expiry>2812</expiry></CH></PAReq></Message>"
        "</ThreeDSecure>"
    )
    return base64.b64encode(zlib.compress(xml.encode(), 9)).decode("ascii")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _payment(payment_id: str, status: str, created_at: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": payment_id,
        "status": status,
        "created_at": created_at,
        "customer": {"reference": "customer@shop.example"},
        "payment_details": {
            "type": "card",
            "card": {"brand": "visa", "last4": "8801", "bin": "444600"},
        },
        "amount_details": {"amount": AMOUNT, "currency": CURRENCY},
        "transaction_info": {"rrn": "425307614918", "auth_code": "057441"},
        **extra,
    }


def _webhook(
    kind: str, session_id: str, status: str, created_at: str, payment: dict[str, Any]
) -> dict[str, Any]:
    session = {
        "id": session_id,
        "status": status,
        "created_at": created_at,
        "updated_at": now(),
        "acquiring_payments": [payment],
    }
    return {"type": kind, "session": session}
