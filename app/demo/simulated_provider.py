"""The simulated Smart Glocal: sessions run in the documented confirm-first order, each webhook
shaped like the real ones, signed and sent.

``ready_to_confirm`` → the partner confirms → ``action_required`` (3-D Secure) → the bank
answers → ``payment_finished``; for a two-stage payment the bank's approval brings
``ready_to_capture`` instead, and ``payment_finished`` follows the partner's capture. A declined
payment ends in ``payment_finished`` (failed) either way. Every webhook carries the provider's
clock in ``session.updated_at``, strictly later than the one before.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from ..signature import HEADER, sign

log = logging.getLogger(__name__)

AMOUNT = 15000  # minor units: 150.00
CURRENCY = "usd"
STEP_DELAY = 1.0  # seconds the provider works before each webhook


class Stage(StrEnum):
    """What the provider waits for in a session."""

    WORKING = "working"  # nothing: a webhook is on its way
    CONFIRM = "confirm"  # the partner's session/confirm
    BANK = "bank"  # the customer's answer at the bank
    CAPTURE = "capture"  # the partner's session/capture
    FINISHED = "finished"  # nothing ever again


@dataclass(frozen=True, slots=True)
class Event:
    """One step of a session: a webhook sent, a partner's call, or the customer's answer."""

    at: str  # the provider's clock
    kind: str  # "webhook", "call" or "bank"
    name: str  # the webhook type, "confirm"/"capture", or "approved"/"declined"


@dataclass(slots=True)
class Session:
    """A payment session as the provider knows it."""

    id: str
    payment_id: str
    created_at: str
    return_url: str  # where the customer goes after the bank (``payment_options.return_url``)
    redirect: Mapping[str, Any]  # the bank step, as ``action_required`` will carry it
    two_stage: bool
    stage: Stage = Stage.WORKING
    history: list[Event] = field(default_factory=list)


WebhookBuilder = Callable[[Session, str], dict[str, Any]]


class Provider:
    """Runs sessions: answers the partner's calls and the bank, signs and POSTs each webhook."""

    def __init__(self, key: RSAPrivateKey, webhook_url: str, delay: float = STEP_DELAY) -> None:
        self.key = key
        self.webhook_url = webhook_url
        self.delay = delay
        self.sessions: dict[str, Session] = {}
        self._last = datetime.min.replace(tzinfo=UTC)
        self._tasks: set[asyncio.Task[None]] = set()

    def tick(self) -> str:
        """The provider's clock: ISO 8601 UTC with microseconds, always later than before."""
        moment = max(datetime.now(UTC), self._last + timedelta(microseconds=1))
        self._last = moment
        return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")

    def start(
        self, session_id: str, *, return_url: str, redirect: Mapping[str, Any], two_stage: bool
    ) -> Session:
        """The partner started a payment with card data: ``ready_to_confirm`` follows."""
        session = Session(
            id=session_id,
            payment_id=f"pm_demo_{secrets.token_hex(6)}",
            created_at=self.tick(),
            return_url=return_url,
            redirect=redirect,
            two_stage=two_stage,
        )
        self.sessions[session_id] = session
        self._next(session, ready_to_confirm, Stage.CONFIRM)
        return session

    def confirm(self, session_id: str) -> bool:
        """``session/confirm``: the bank step (``action_required``) follows."""
        session = self._waiting(session_id, Stage.CONFIRM)
        if session is None:
            return False
        session.history.append(Event(self.tick(), "call", "confirm"))
        self._next(session, action_required, Stage.BANK)
        return True

    def bank_answered(self, session_id: str, *, approved: bool) -> bool:
        """The customer's answer at the bank: the outcome, or for a two-stage payment the hold."""
        session = self._waiting(session_id, Stage.BANK)
        if session is None:
            return False
        session.history.append(Event(self.tick(), "bank", "approved" if approved else "declined"))
        if approved and session.two_stage:
            self._next(session, ready_to_capture, Stage.CAPTURE)
        else:
            self._next(session, partial(payment_finished, approved=approved), Stage.FINISHED)
        return True

    def capture(self, session_id: str) -> bool:
        """``session/capture``: the held money is taken, ``payment_finished`` follows."""
        session = self._waiting(session_id, Stage.CAPTURE)
        if session is None:
            return False
        session.history.append(Event(self.tick(), "call", "capture"))
        self._next(session, partial(payment_finished, approved=True), Stage.FINISHED)
        return True

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

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _waiting(self, session_id: str, stage: Stage) -> Session | None:
        """The session, if it waits for ``stage`` (anything else is refused, as the API would)."""
        session = self.sessions.get(session_id)
        if session is None or session.stage is not stage:
            log.warning("provider: session %s is not waiting for %s", session_id, stage)
            return None
        return session

    def _next(self, session: Session, build: WebhookBuilder, then: Stage) -> None:
        """Work for a moment, then send the webhook ``build`` makes and wait for ``then``."""
        session.stage = Stage.WORKING
        task = asyncio.create_task(self._send_later(session, build, then))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_later(self, session: Session, build: WebhookBuilder, then: Stage) -> None:
        await asyncio.sleep(self.delay)
        webhook = build(session, self.tick())
        # Waiting before sending: the partner may act on the webhook before the bridge answers.
        session.stage = then
        session.history.append(Event(webhook["session"]["updated_at"], "webhook", webhook["type"]))
        await self.send(webhook)


async def post(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """POST ``body`` and return the status and body of the answer (error statuses included)."""
    return await asyncio.to_thread(_call, "POST", url, body, dict(headers))


async def get(url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
    """GET ``url`` and return the status and body of the answer (error statuses included)."""
    return await asyncio.to_thread(_call, "GET", url, None, dict(headers))


def _call(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def ready_to_confirm(session: Session, updated_at: str) -> dict[str, Any]:
    payment = _payment(session, "in_progress")
    return _webhook("ready_to_confirm", session, "in_progress", updated_at, payment, "confirm")


def action_required(session: Session, updated_at: str) -> dict[str, Any]:
    interaction = {"type": "redirect", "redirect": dict(session.redirect)}
    payment = _payment(session, "pending", customer_interaction=interaction)
    return _webhook("action_required", session, "in_progress", updated_at, payment)


def ready_to_capture(session: Session, updated_at: str) -> dict[str, Any]:
    payment = _payment(session, "in_progress")
    return _webhook("ready_to_capture", session, "in_progress", updated_at, payment, "capture")


def payment_finished(session: Session, updated_at: str, *, approved: bool) -> dict[str, Any]:
    if approved:
        payment = _payment(session, "succeeded", finished_at=updated_at)
        return _webhook("payment_finished", session, "accepted", updated_at, payment)
    error = {"code": "declined_by_issuer", "description": "The issuer declined the payment"}
    payment = _payment(session, "failed", finished_at=updated_at, error=error)
    return _webhook("payment_finished", session, "in_progress", updated_at, payment)


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


def _payment(session: Session, status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": session.payment_id,
        "status": status,
        "created_at": session.created_at,
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
    kind: str,
    session: Session,
    status: str,
    updated_at: str,
    payment: dict[str, Any],
    next_action: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": session.id,
        "status": status,
        "created_at": session.created_at,
        "updated_at": updated_at,
        "acquiring_payments": [payment],
    }
    if next_action is not None:
        body["next_action"] = next_action
    return {"type": kind, "session": body}
