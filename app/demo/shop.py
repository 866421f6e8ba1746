"""The demo's second app: a shop (the partner), the provider's customer-facing side, and a bank.

The shop is deployed the recommended way, the model a partner copies: the provider sends its
webhooks to the bridge, which sends the shop's backend its own ``session.updated`` events
(``BRIDGE_RELAY_URL`` is ``/partner/webhooks`` here, ``BRIDGE_RELAY_EVENTS`` is ``bridge``), so
the shop parses no provider payload and needs no provider key. The shop mints a token through
the bridge's real API, starts the payment at the provider and sends the customer to ``pay_url``.
Its backend verifies every message with the ``standardwebhooks`` library and
``BRIDGE_RELAY_SECRET``, acts once per ``webhook-id``, and answers 200 at once: it confirms on
``next_action: "confirm"``, captures on ``"capture"``, closes the order on a final ``status``,
each once per session. The bank (ACS) shows exactly what reached it, then lets the customer
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

from quart import Quart, abort, redirect, render_template, request
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers.response import Response

from .. import assets
from . import simulated_provider as sg
from .simulated_provider import Provider, Session

log = logging.getLogger(__name__)

RESULT_PATH = "/result"  # the shop's page the bridge sends customers back to
RELAY_PATH = "/partner/webhooks"  # the shop's backend endpoint the bridge sends events to
RETURN_MAX_AGE = 300.0  # seconds a signed return stays believable (README's default)
PANEL_ROWS = 8  # the newest deliveries the partner's panel shows (they fit its frame)
FINAL = frozenset({"succeeded", "failed", "canceled", "error", "refunded"})
CLOSED = {  # what the shop does with an order whose session reached a final status
    "succeeded": "order paid: fulfilled",
    "refunded": "order refunded: fulfilment reversed",
}
NOT_PAID = "order not paid: closed"  # failed, canceled, error
NOTHING_TO_DO = {"action_required": "nothing to do (the bridge shows the customer the bank)"}
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
        """The bridge's ``BRIDGE_RELAY_URL``: the shop backend's endpoint for its events."""
        return f"{self.shop_url}{RELAY_PATH}"


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the shop's backend is configured with, as a real partner's would be."""

    api_key: str  # for the bridge's partner API (Bearer)
    return_secret: str  # the bridge's BRIDGE_RETURN_SECRET: checks the return's sig
    relay_secret: str  # the bridge's BRIDGE_RELAY_SECRET: checks what the relay sends


@dataclass(slots=True)
class Received:
    """One event as the shop's backend received it from the bridge, and what it did about it."""

    at: str  # the shop's clock, ISO 8601
    type: str  # session.updated
    session_id: str
    status: str
    next_action: str | None
    delivery_id: str  # webhook-id
    attempt: str  # X-Bridge-Attempt
    repeat: bool  # a webhook-id seen before: answered 200, not acted on again
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
        self.received: list[Received] = []  # every event, in the order it came
        self._signed = Webhook(credentials.relay_secret)
        self._message_ids: set[str] = set()  # webhook-ids seen: each is acted on once
        self._steps: set[tuple[str, str]] = set()  # (session, step) done: the order's state
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
        """The shop backend's endpoint (``BRIDGE_RELAY_URL``): the bridge's own events, signed
        as Standard Webhooks specify. Verified, recorded, answered at once; acted on later."""
        body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        try:  # the exact bytes, and webhook-id, webhook-timestamp (5 minutes), webhook-signature
            event = self._signed.verify(body, dict(request.headers.items()))
        except WebhookVerificationError as error:
            log.warning("shop: refused a message the bridge did not sign: %s", error)
            return {"error": "bad signature"}, 400
        except ValueError:  # signed, but no JSON
            event = None
        if not isinstance(event, dict):
            return {"error": "not an event"}, 400
        if event.get("type") != "session.updated":
            # A newer bridge may send types this shop does not know. Anything but a 2xx would be
            # retried for days and hold up the session's later events: take it, do nothing.
            log.info("shop: ignored a %r message", event.get("type"))
            return {"status": "ignored"}, 200
        data = _session_updated(event.get("data"))
        if data is None:
            return {"error": "not a session.updated event"}, 400
        session_id, status, next_action = data
        message_id = request.headers["webhook-id"]
        received = Received(
            at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            type=event["type"],
            session_id=session_id,
            status=status,
            next_action=next_action,
            delivery_id=message_id,
            attempt=request.headers.get("X-Bridge-Attempt", ""),
            repeat=message_id in self._message_ids,
        )
        self.received.append(received)
        if not received.repeat:  # at least once: a message may come again, it is acted on once
            self._message_ids.add(message_id)
            self._background(self._act(received))
        return {"status": "received"}, 200

    async def partner(self) -> str:
        """The partner's side: the events the shop's backend received, newest last."""
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
        closed = any(item.status == status and item.done for item in received)
        return await render_template(
            "demo/result.html",
            session=session,
            status=status,
            returned=returned,
            claimed=None if returned else request.args.get("status"),
            received=received,
            settled=status in FINAL and closed,  # else the page updates by itself
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

    async def _act(self, received: Received) -> None:
        """What the session asks of the shop's backend, each step once per session: on
        ``next_action``, ``session/confirm`` or ``session/capture`` at the provider; on a final
        ``status``, the order closed. Nothing else needs it: the bridge shows the customer the
        bank."""
        session_id, status = received.session_id, received.status
        step = received.next_action or (status if status in FINAL else None)
        if step is None:
            received.done = NOTHING_TO_DO.get(status, "nothing to do")
        elif (session_id, step) in self._steps:  # a later change that asks the same again
            received.done = f"nothing to do: {step} done before"
        else:
            self._steps.add((session_id, step))
            received.done = self._step(session_id, step)
        log.info("shop: %s %s for %s: %s", received.type, status, session_id, received.done)

    def _step(self, session_id: str, step: str) -> str:
        try:
            if step == "confirm":
                called = self.provider.confirm(session_id)
            elif step == "capture":
                called = self.provider.capture(session_id)
            else:
                return CLOSED.get(step, NOT_PAID)
        except Exception:
            log.exception("shop: %s for %s failed", step, session_id)
            return "failed (see the log)"
        return f"called session/{step}" if called else f"session/{step} refused"

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


def _session_updated(data: Any) -> tuple[str, str, str | None] | None:
    """A ``session.updated`` event's session id, status and next action, or ``None``."""
    if not isinstance(data, dict):
        return None
    session_id, status = data.get("session_id"), data.get("status")
    next_action = data.get("next_action")
    if not isinstance(session_id, str) or not isinstance(status, str):
        return None
    return session_id, status, next_action if isinstance(next_action, str) else None


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
