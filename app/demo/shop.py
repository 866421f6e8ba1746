"""The demo's second app: a shop (the partner), the provider's customer-facing side, and a bank.

The shop is deployed the recommended way: the provider sends its webhooks to the bridge, which
relays them to the shop's backend (``BRIDGE_RELAY_URL`` is ``/partner/webhooks`` here). The shop
mints a token through the bridge's real API, starts the payment at the provider and sends the
customer to ``pay_url``. Its backend checks every relayed webhook's ``X-PARTNER-SIGN`` with the
provider's public key, acts once per ``X-Bridge-Delivery-Id``, and answers 200 at once: it
confirms on ``ready_to_confirm``, captures on ``ready_to_capture``, closes the order on
``payment_finished``. The bank (ACS) shows exactly what reached it, then lets the customer
approve or decline. The bridge sends the customer back to the shop's result page with a signed
return, which the shop checks (``sig`` and ``ts``) before it believes the status it carries.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlencode

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from quart import Quart, abort, redirect, render_template, request
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers.response import Response

from .. import assets
from ..signature import HEADER, verify
from . import simulated_provider as sg
from .simulated_provider import Provider, Session

log = logging.getLogger(__name__)

RESULT_PATH = "/result"  # the shop's page the bridge sends customers back to
RELAY_PATH = "/partner/webhooks"  # the shop's backend endpoint the bridge relays webhooks to
RETURN_MAX_AGE = 300.0  # seconds a signed return stays believable (README's default)
PANEL_ROWS = 8  # the newest deliveries the partner's panel shows (they fit its frame)
FINAL = frozenset({"succeeded", "failed", "canceled", "error", "refunded"})
METHODS = {
    "post": "3-D Secure 1: the bank gets a POST form (PaReq, MD, TermUrl)",
    "get": "A GET redirect: the bank gets everything in its query string",
}
STAGES = {
    "one": "One-stage: the money is taken as soon as the bank approves",
    "two": "Two-stage: the bank approves a hold, then the shop captures it",
}


@dataclass(frozen=True, slots=True)
class Site:
    """Where the two demo apps listen."""

    host: str
    bridge_port: int
    shop_port: int

    @property
    def bridge_url(self) -> str:
        return f"http://{_link_host(self.host)}:{self.bridge_port}"

    @property
    def shop_url(self) -> str:
        return f"http://{_link_host(self.host)}:{self.shop_port}"

    @property
    def return_url(self) -> str:
        """The bridge's ``BRIDGE_RETURN_URL``: the shop's result page."""
        return f"{self.shop_url}{RESULT_PATH}"

    @property
    def relay_url(self) -> str:
        """The bridge's ``BRIDGE_RELAY_URL``: the shop backend's webhook endpoint."""
        return f"{self.shop_url}{RELAY_PATH}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the shop's backend is configured with, as a real partner's would be."""

    api_key: str  # for the bridge's partner API (Bearer)
    provider_key: RSAPublicKey  # the provider's public key: checks X-PARTNER-SIGN
    return_secret: str  # the bridge's BRIDGE_RETURN_SECRET: checks the return's sig
    relay_secret: str  # the bridge's BRIDGE_RELAY_SECRET: checks what the relay sends


@dataclass(slots=True)
class Received:
    """One relayed webhook as the shop's backend received it, and what it did about it."""

    at: str  # the shop's clock, ISO 8601
    type: str
    session_id: str
    delivery_id: str  # X-Bridge-Delivery-Id
    attempt: str  # X-Bridge-Attempt
    repeat: bool  # a delivery id seen before: answered 200, not acted on again
    done: str | None = None  # what the shop did in response, once it has


def check_return(
    query: str, secret: str, max_age: float = RETURN_MAX_AGE, now: float | None = None
) -> dict[str, str] | None:
    """The bridge's parameters from a return's raw query string, or ``None``: not to be
    trusted. README's "Checking the return", as a partner would paste it."""
    signed, marker, sig = query.rpartition("&sig=")
    expected = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
    if not marker or not hmac.compare_digest(expected.encode(), sig.encode()):
        return None  # not from the bridge, or changed on the way
    params = {name: values[-1] for name, values in parse_qs(signed).items()}
    age = (time.time() if now is None else now) - int(params["ts"])
    if not -60 <= age <= max_age:  # a minute of clock skew
        return None  # an old link replayed: the shop asks the bridge instead
    return params


def create_shop(site: Site, provider: Provider, credentials: Credentials) -> Quart:
    """The shop, provider and bank app; its state lives in memory for the life of the process."""
    app = Quart(__name__, template_folder=assets.TEMPLATES, static_folder=None)
    shop = _Shop(site, provider, credentials)
    app.add_url_rule("/", "home", shop.home, methods=["GET"])
    app.add_url_rule("/checkout", "checkout", shop.checkout, methods=["POST"])
    app.add_url_rule(RESULT_PATH, "result", shop.result, methods=["GET"])
    app.add_url_rule(RELAY_PATH, "webhooks", shop.webhook, methods=["POST"])
    app.add_url_rule("/partner", "partner", shop.partner, methods=["GET"])
    app.add_url_rule("/acs", "bank", shop.bank, methods=["GET", "POST"])
    app.add_url_rule("/provider/return", "provider_return", shop.bank_answered, methods=["POST"])
    app.after_serving(shop.stop)
    return app


class _Shop:
    def __init__(self, site: Site, provider: Provider, credentials: Credentials) -> None:
        self.site = site
        self.provider = provider
        self.credentials = credentials
        self.received: list[Received] = []  # every relayed webhook, in the order it came
        self._delivery_ids: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def home(self) -> str:
        return await render_template(
            "demo/shop.html", methods=METHODS, stages=STAGES, site=self.site
        )

    async def checkout(self) -> Response:
        """The shop's backend: a token from the bridge, the payment started, off to ``pay_url``."""
        form = await request.form
        method, stages = form.get("method", "post"), form.get("stages", "one")
        if method not in METHODS or stages not in STAGES:
            abort(400)
        session_id = f"ps_demo_{secrets.token_hex(6)}"
        token = await self._mint_token(session_id)
        self.provider.start(
            session_id,
            return_url=token["return_url"],
            redirect=self._bank_redirect(session_id, method),
            two_stage=stages == "two",
        )
        log.info("shop: session %s, customer sent to %s", session_id, token["pay_url"])
        return redirect(token["pay_url"], 303)

    async def webhook(self) -> tuple[dict[str, str], int]:
        """The shop backend's webhook endpoint (``BRIDGE_RELAY_URL``): the provider's bytes and
        signature, relayed by the bridge. Checked, recorded, answered at once; acted on later."""
        body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        if not verify([self.credentials.provider_key], body, request.headers.get(HEADER)):
            log.warning("shop: refused a webhook with a bad or missing %s", HEADER)
            return {"error": "bad signature"}, 401
        delivery_id = request.headers.get("X-Bridge-Delivery-Id", "")
        fields = _webhook_fields(body)
        if not delivery_id or fields is None:
            return {"error": "not a relayed webhook"}, 400
        kind, session_id, payment_status = fields
        received = Received(
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            type=kind,
            session_id=session_id,
            delivery_id=delivery_id,
            attempt=request.headers.get("X-Bridge-Attempt", ""),
            repeat=delivery_id in self._delivery_ids,
        )
        self.received.append(received)
        if not received.repeat:  # at least once: a delivery may come again, it is acted on once
            self._delivery_ids.add(delivery_id)
            self._background(self._act(received, payment_status))
        return {"status": "received"}, 200

    async def partner(self) -> str:
        """The partner's side: what the shop's backend received from the relay, newest last."""
        return await render_template(
            "demo/partner.html",
            received=self.received[-PANEL_ROWS:],
            earlier=max(0, len(self.received) - PANEL_ROWS),
        )

    async def result(self) -> str:
        """Where the bridge sends the customer back: the signed return checked, the order as
        the bridge sees it, and what the shop's backend heard."""
        session = self._session(request.args.get("session_id"))
        query = request.query_string.decode("utf-8", "replace")
        returned = check_return(query, self.credentials.return_secret)
        if returned is not None and returned.get("session_id") != session.id:
            returned = None
        answer = await self._session_answer(session.id)
        status = answer["status"] if answer else "unknown"
        received = [item for item in self.received if item.session_id == session.id]
        fulfilled = any(item.type == "payment_finished" and item.done for item in received)
        return await render_template(
            "demo/result.html",
            session=session,
            status=status,
            returned=returned,
            claimed=None if returned else request.args.get("status"),
            received=received,
            settled=status in FINAL and fulfilled,  # else the page updates by itself
        )

    async def bank(self) -> str:
        """The ACS page: everything that arrived, checked against what was sent; then a choice."""
        session = self._session(request.args.get("session"))
        query = request.query_string.decode("utf-8", "replace")
        form = await request.form if request.method == "POST" else MultiDict()
        sent = _sent(session.redirect)
        query_fields = _checked(parse_qsl(query, keep_blank_values=True), sent)
        form_fields = _checked(form.items(multi=True), sent)
        arrived = {name for name, _, _ in query_fields + form_fields}
        missing = [name for name in sent if name not in arrived]
        return await render_template(
            "demo/bank.html",
            session=session,
            method=request.method,
            query=query,
            query_fields=query_fields,
            form_fields=form_fields,
            missing=missing,
            exact=not missing and all(same for _, _, same in query_fields + form_fields),
        )

    async def bank_answered(self) -> Response:
        """The provider's 3-D Secure return point (TermUrl): the answer, then the bridge."""
        form = await request.form
        session = self._session(form.get("session"))
        self.provider.bank_answered(session.id, approved=form.get("decision") == "approve")
        return redirect(session.return_url, 303)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.provider.stop()

    async def _act(self, received: Received, payment_status: str | None) -> None:
        """The shop's backend answers what the webhook asks: ``session/confirm`` and
        ``session/capture`` at the provider; the order closed on ``payment_finished``."""
        session_id = received.session_id
        try:
            if received.type == "ready_to_confirm":
                called = self.provider.confirm(session_id)
                received.done = "called session/confirm" if called else "session/confirm refused"
            elif received.type == "ready_to_capture":
                called = self.provider.capture(session_id)
                received.done = "called session/capture" if called else "session/capture refused"
            elif received.type == "payment_finished":
                paid = payment_status == "succeeded"
                received.done = "order paid: fulfilled" if paid else "order not paid: closed"
            else:
                received.done = "nothing to do (the bridge shows the customer the bank)"
        except Exception:
            log.exception("shop: acting on %s for %s failed", received.type, session_id)
            received.done = "failed (see the log)"
        log.info("shop: %s for %s: %s", received.type, session_id, received.done)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _session(self, session_id: str | None) -> Session:
        session = self.provider.sessions.get(session_id or "")
        if session is None:
            abort(404)
        return session

    async def _mint_token(self, session_id: str) -> dict[str, Any]:
        url = f"{self._api_url(session_id)}/tokens"
        status, body = await sg.post(url, b"", self._authorization)
        if status != 201:
            raise RuntimeError(f"the bridge refused a token: {status} {body!r}")
        token: dict[str, Any] = json.loads(body)
        return token

    async def _session_answer(self, session_id: str) -> dict[str, Any] | None:
        """The bridge's answer for the session (``GET /api/v1/sessions/{id}``), or ``None``."""
        try:
            status, body = await sg.get(self._api_url(session_id), self._authorization)
        except OSError as error:
            log.warning("shop: could not read session %s: %s", session_id, error)
            return None
        if status != 200:
            return None
        answer: dict[str, Any] = json.loads(body)
        return answer

    def _api_url(self, session_id: str) -> str:
        return f"{self.site.bridge_url}/api/v1/sessions/{quote(session_id, safe='')}"

    @property
    def _authorization(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credentials.api_key}"}

    def _bank_redirect(self, session_id: str, method: str) -> dict[str, Any]:
        """The ``customer_interaction.redirect`` the provider puts in ``action_required``."""
        base_url = f"{self.site.shop_url}/acs"
        qs = {"session": session_id}
        md = secrets.token_urlsafe(18)
        if method == "post":
            params = {
                "PaReq": sg.pareq(session_id),
                "MD": md,
                "TermUrl": f"{self.site.shop_url}/provider/return",
            }
        else:
            description = "Order 1042: 2× café crème & 1 croissant"  # bytes that must survive
            params = {"MD": md, "lang": "en", "description": description}
        return {
            "url": f"{base_url}?{urlencode(qs)}",
            "base_url": base_url,
            "method": method.upper(),
            "qs": qs,
            "params": params,
        }


def _webhook_fields(body: bytes) -> tuple[str, str, str | None] | None:
    """A webhook's type, session id and last payment's status, or ``None`` if it has no type
    or session id."""
    try:
        webhook = json.loads(body)
        kind, session = webhook["type"], webhook["session"]
        session_id, payments = session["id"], session.get("acquiring_payments") or [{}]
        payment_status = payments[-1].get("status")
    except (ValueError, TypeError, KeyError, AttributeError, IndexError):
        return None
    if not isinstance(kind, str) or not isinstance(session_id, str):
        return None
    return kind, session_id, payment_status if isinstance(payment_status, str) else None


def _sent(redirect: Mapping[str, Any]) -> dict[str, str]:
    """Every pair the provider told the bank to receive: the query string's and the form's."""
    return {**redirect["qs"], **redirect["params"]}


def _checked(
    pairs: Iterable[tuple[str, str]], sent: Mapping[str, str]
) -> list[tuple[str, str, bool]]:
    return [(name, value, sent.get(name) == value) for name, value in pairs]


def _link_host(host: str) -> str:
    """The host as it goes in a link: wildcard addresses become loopback, IPv6 gets brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host
