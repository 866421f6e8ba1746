"""The demo's second app: a shop (the partner), the provider's customer-facing side, and a bank.

The shop mints a token through the bridge's real API and sends the customer to ``pay_url``; the
provider tells the bridge about the bank step by signed webhooks; the bank (ACS) shows exactly
what reached it, then lets the customer approve or decline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from quart import Quart, abort, redirect, render_template, request
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers.response import Response

from .. import assets
from . import simulated_provider as sg
from .simulated_provider import Provider

log = logging.getLogger(__name__)

WEBHOOK_DELAY = 1.5  # seconds between the checkout and the action_required webhook
OUTCOME_DELAY = 1.0  # seconds between the bank's answer and the payment_finished webhook
METHODS = {
    "post": "3-D Secure 1: the bank gets a POST form (PaReq, MD, TermUrl)",
    "get": "A GET redirect: the bank gets everything in its query string",
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


@dataclass(slots=True)
class Purchase:
    session_id: str
    payment_id: str
    created_at: str
    token: str
    sent: tuple[tuple[str, str], ...]  # every pair the provider told the bank to receive
    decided: bool = False


def create_shop(site: Site, provider: Provider, api_key: str) -> Quart:
    """The shop, provider and bank app; its state lives in memory for the life of the process."""
    app = Quart(__name__, template_folder=assets.TEMPLATES, static_folder=None)
    shop = _Shop(site, provider, api_key)
    app.add_url_rule("/", "home", shop.home, methods=["GET"])
    app.add_url_rule("/checkout", "checkout", shop.checkout, methods=["POST"])
    app.add_url_rule("/acs", "bank", shop.bank, methods=["GET", "POST"])
    app.add_url_rule("/provider/return", "provider_return", shop.bank_answered, methods=["POST"])
    app.after_serving(shop.stop)
    return app


class _Shop:
    def __init__(self, site: Site, provider: Provider, api_key: str) -> None:
        self.site = site
        self.provider = provider
        self.api_key = api_key
        self.purchases: dict[str, Purchase] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def home(self) -> str:
        return await render_template("demo/shop.html", methods=METHODS, site=self.site)

    async def checkout(self) -> Response:
        """The shop's backend: a session, a token from the bridge, then off to ``pay_url``."""
        method = (await request.form).get("method", "post")
        if method not in METHODS:
            abort(400)
        session_id = f"ps_demo_{secrets.token_hex(6)}"
        token = await self._mint_token(session_id)
        redirect_instruction = self._bank_redirect(session_id, method)
        purchase = Purchase(
            session_id=session_id,
            payment_id=f"pm_demo_{secrets.token_hex(6)}",
            created_at=sg.now(),
            token=token["token"],
            sent=tuple(redirect_instruction["qs"].items())
            + tuple(redirect_instruction["params"].items()),
        )
        self.purchases[session_id] = purchase
        webhook = sg.action_required(
            session_id, purchase.payment_id, purchase.created_at, redirect_instruction
        )
        self._later(WEBHOOK_DELAY, webhook)
        log.info("shop: session %s, customer sent to %s", session_id, token["pay_url"])
        return redirect(token["pay_url"], 303)

    async def bank(self) -> str:
        """The ACS page: everything that arrived, checked against what was sent; then a choice."""
        purchase = self._purchase(request.args.get("session"))
        query = request.query_string.decode("utf-8", "replace")
        form = await request.form if request.method == "POST" else MultiDict()
        sent = dict(purchase.sent)
        query_fields = _checked(parse_qsl(query, keep_blank_values=True), sent)
        form_fields = _checked(form.items(multi=True), sent)
        arrived = {name for name, _, _ in query_fields + form_fields}
        missing = [name for name in sent if name not in arrived]
        return await render_template(
            "demo/bank.html",
            purchase=purchase,
            method=request.method,
            query=query,
            query_fields=query_fields,
            form_fields=form_fields,
            missing=missing,
            exact=not missing and all(same for _, _, same in query_fields + form_fields),
        )

    async def bank_answered(self) -> Response:
        """The provider's 3-D Secure return point (TermUrl): outcome, then the partner's page."""
        form = await request.form
        purchase = self._purchase(form.get("session"))
        approved = form.get("decision") == "approve"
        if not purchase.decided:
            purchase.decided = True
            webhook = sg.payment_finished(
                purchase.session_id, purchase.payment_id, purchase.created_at, approved=approved
            )
            self._later(OUTCOME_DELAY, webhook)
        return redirect(f"{self.site.bridge_url}/pay/{purchase.token}/return", 303)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _purchase(self, session_id: str | None) -> Purchase:
        purchase = self.purchases.get(session_id or "")
        if purchase is None:
            abort(404)
        return purchase

    async def _mint_token(self, session_id: str) -> dict[str, Any]:
        url = f"{self.site.bridge_url}/api/v1/sessions/{session_id}/tokens"
        status, body = await sg.post(url, b"", {"Authorization": f"Bearer {self.api_key}"})
        if status != 201:
            raise RuntimeError(f"the bridge refused a token: {status} {body!r}")
        return json.loads(body)

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

    def _later(self, delay: float, webhook: Mapping[str, Any]) -> None:
        task = asyncio.create_task(self._send_later(delay, webhook))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_later(self, delay: float, webhook: Mapping[str, Any]) -> None:
        await asyncio.sleep(delay)
        await self.provider.send(webhook)


def _checked(
    pairs: Iterable[tuple[str, str]], sent: Mapping[str, str]
) -> list[tuple[str, str, bool]]:
    return [(name, value, sent.get(name) == value) for name, value in pairs]


def _link_host(host: str) -> str:
    """The host as it goes in a link: wildcard addresses become loopback, IPv6 gets brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host
