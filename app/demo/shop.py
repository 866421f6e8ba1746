"""The demo's second app: a shop (the partner), the provider's customer-facing side, and a bank.

The shop mints a token through the bridge's real API, starts the payment at the provider and
sends the customer to ``pay_url``. Its backend then follows the session through the bridge's
partner API (there is no relay yet): it confirms when the provider waits for ``confirm`` and,
for a two-stage payment, captures when it waits for ``capture``. The bank (ACS) shows exactly
what reached it, then lets the customer approve or decline. The bridge sends the customer back
to the shop's result page, which shows what happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from quart import Quart, abort, redirect, render_template, request
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers.response import Response

from .. import assets
from . import simulated_provider as sg
from .simulated_provider import Provider, Session

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between the shop's reads of the session at the bridge
FOLLOW_FOR = 4 * 3600.0  # the provider waits 240 minutes for a confirm at most
RESULT_PATH = "/result"  # the shop's page the bridge sends customers back to
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


def create_shop(site: Site, provider: Provider, api_key: str) -> Quart:
    """The shop, provider and bank app; its state lives in memory for the life of the process."""
    app = Quart(__name__, template_folder=assets.TEMPLATES, static_folder=None)
    shop = _Shop(site, provider, api_key)
    app.add_url_rule("/", "home", shop.home, methods=["GET"])
    app.add_url_rule("/checkout", "checkout", shop.checkout, methods=["POST"])
    app.add_url_rule(RESULT_PATH, "result", shop.result, methods=["GET"])
    app.add_url_rule("/acs", "bank", shop.bank, methods=["GET", "POST"])
    app.add_url_rule("/provider/return", "provider_return", shop.bank_answered, methods=["POST"])
    app.after_serving(shop.stop)
    return app


class _Shop:
    def __init__(self, site: Site, provider: Provider, api_key: str) -> None:
        self.site = site
        self.provider = provider
        self.api_key = api_key
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
        self._follow(session_id, two_stage=stages == "two")
        log.info("shop: session %s, customer sent to %s", session_id, token["pay_url"])
        return redirect(token["pay_url"], 303)

    async def result(self) -> str:
        """Where the bridge sends the customer back: the order as the bridge and provider see it."""
        session = self._session(request.args.get("session_id"))
        answer = await self._session_answer(session.id)
        status = answer["status"] if answer else "unknown"
        return await render_template(
            "demo/result.html",
            session=session,
            status=status,
            came_back_with=request.args.get("status"),
            final=status in FINAL,
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

    def _follow(self, session_id: str, *, two_stage: bool) -> None:
        task = asyncio.create_task(self._confirm_and_capture(session_id, two_stage=two_stage))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _confirm_and_capture(self, session_id: str, *, two_stage: bool) -> None:
        """The shop's backend: confirm when the provider asks, then capture a held payment."""
        try:
            if not await self._wait_for(session_id, "confirm"):
                return
            self.provider.confirm(session_id)
            if two_stage and await self._wait_for(session_id, "capture"):
                self.provider.capture(session_id)
        except Exception:
            log.exception("shop: following session %s failed", session_id)

    async def _wait_for(self, session_id: str, next_action: str) -> bool:
        """Read the session at the bridge until the provider waits for ``next_action``;
        ``False`` once the session is final or after :data:`FOLLOW_FOR` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FOLLOW_FOR
        while loop.time() < deadline:
            answer = await self._session_answer(session_id)
            if answer is not None and answer.get("next_action") == next_action:
                return True
            if answer is not None and answer.get("status") in FINAL:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return False

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
        return {"Authorization": f"Bearer {self.api_key}"}

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
