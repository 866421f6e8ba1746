"""Real servers on loopback for browser tests: the bridge, a fake bank, a partner's page.

Servers run under uvicorn in one background thread with its own event loop; tests talk to them
over real HTTP and drive Debian's Chromium through Playwright's sync API.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Quart, Response, request

from app import create_app

from ..conftest import RELAY_SECRET, public_pem
from ..servers import Client as Bridge


class ServerThread:
    """One event loop in a thread, serving any number of ASGI apps on loopback ports."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._running: list[tuple[uvicorn.Server, Future[None]]] = []

    def serve(self, app: Any) -> str:
        """Serve ``app`` on a free loopback port; its base URL once it accepts connections."""
        sock = socket.create_server(("127.0.0.1", 0))
        # uvicorn leaves signals alone outside the main thread.
        config = uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, ws="none")
        server = uvicorn.Server(config)
        future = asyncio.run_coroutine_threadsafe(server.serve(sockets=[sock]), self.loop)
        self._running.append((server, future))
        wait_until(lambda: server.started or future.done())
        future.done() and future.result()  # a server that failed to start raises here
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        for server, _ in self._running:
            server.should_exit = True
        for _, future in self._running:
            future.result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


# --- the fake bank ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    """One request as the bank received it."""

    method: str
    path: str
    query: str
    body: bytes
    fields: list[tuple[str, str]]


@dataclass
class Bank:
    """Records exactly what arrives, and offers a button back to ``TermUrl``.

    ``refuse``: ``"every"`` answer forbids framing (``X-Frame-Options: DENY``), only the
    ``"form"``'s (the POST's), or none (``""``). ``looks`` are the requests for its root, where
    the bridge looks at its headers.
    """

    arrivals: list[Arrival] = field(default_factory=list)
    url: str = ""
    refuse: str = ""
    looks: list[Arrival] = field(default_factory=list)

    def app(self) -> Quart:
        bank = Quart(__name__)

        @bank.after_request
        async def frames(response: Response) -> Response:
            if self.refuse == "every" or (self.refuse == "form" and request.method == "POST"):
                response.headers["X-Frame-Options"] = "DENY"
            return response

        @bank.route("/")
        async def root() -> Response:
            body = await request.get_data()
            self.looks.append(Arrival(request.method, "/", request.query_string.decode(), body, []))
            return Response("<!doctype html><title>Bank</title>", content_type="text/html")

        @bank.route("/favicon.ico")
        async def favicon() -> Response:
            return Response(b"", status=204)

        @bank.route("/<path:path>", methods=["GET", "POST"])
        async def acs(path: str) -> Response:
            body = await request.get_data()
            query = request.query_string.decode("ascii")
            raw = body.decode() if request.method == "POST" else query
            fields = parse_qsl(raw, keep_blank_values=True)
            self.arrivals.append(Arrival(request.method, "/" + path, query, body, fields))
            back = dict(fields).get("TermUrl", "")
            page = (
                "<!doctype html><html lang=en><head><meta charset=utf-8><title>Bank</title>"
                "</head><body><h1>Bank challenge</h1>"
                f"<form method=post action='{_attribute(back)}'>"
                "<input type=hidden name=PaRes value=bank-answer>"
                "<button type=submit id=complete>Complete</button></form></body></html>"
            )
            return Response(page, content_type="text/html; charset=utf-8")

        return bank

    def posts(self) -> list[Arrival]:
        return [arrival for arrival in self.arrivals if arrival.path != "/favicon.ico"]


def _attribute(value: str) -> str:
    return value.replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")


# --- the bridge and the parties that talk to it ---------------------------------------------------


def start_bridge(
    servers: ServerThread, key: rsa.RSAPrivateKey, database: str, **settings: Any
) -> Bridge:
    """A bridge on its own port. Its public URL is only known once served, so links come from
    the request (the Host header is the loopback address the browser used)."""
    api_key = "browser-test-partner-key"
    config = {
        "SECRET_KEY": "browser-test-secret-0123456789",
        "SG_PUBLIC_KEY": public_pem(key),
        "API_KEYS": [api_key],
        "DATABASE_URL": database,
        "ALLOW_INSECURE_ACS": True,
        # The test webhooks carry fixed dates on the provider's clock (tests/payloads.py); the
        # bridge ignores one older than its retention period on the wall clock.
        "RETENTION_DAYS": 3650,
        "RELAY_SECRET": RELAY_SECRET,
        **settings,
    }
    url = servers.serve(create_app(config, environ={}))
    return Bridge(url, key, api_key)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        time.sleep(0.02)


# --- a partner's checkout page ----------------------------------------------------------------

_CHECKOUT = """<!doctype html>
<html lang=en>
<head>
<meta charset=utf-8>
<title>Partner checkout</title>
<link rel="icon" href="data:,">
<script src="{script}"{pin}></script>
</head>
<body>
<h1>Checkout</h1>
<button type=button id=pay>Pay</button>
<div id="bank-step"></div>
<script>
window.events = [];
window.messages = [];
window.addEventListener("message", function (event) {
  window.messages.push({origin: event.origin, data: event.data});
});
window.startBridge = function (overrides) {
  var query = new URLSearchParams(window.location.search);
  var options = {
    statusUrl: query.get("status_url"),
    mode: query.get("mode") || "iframe",
    container: document.getElementById("bank-step"),
    onStatus: function (answer) { window.events.push(["status", answer.status]); },
    onComplete: function (answer) { window.events.push(["complete", answer.status]); },
    onError: function (error) { window.events.push(["error", error.code]); }
  };
  if (query.get("size")) { options.size = query.get("size"); }
  if (query.get("transport")) { options.transport = query.get("transport"); }
  if (query.get("hello")) { options.helloTimeout = Number(query.get("hello")); }
  if (query.get("stall")) { options.stallTimeout = Number(query.get("stall")); }
  if (query.get("fallback")) { options.fallback = query.get("fallback"); }
  Object.assign(options, overrides || {});
  window.flow = RedirectBridge.start(options);
  return window.flow.mode;
};
document.getElementById("pay").addEventListener("click", function () { window.startBridge(); });
if (new URLSearchParams(window.location.search).get("autostart")) { window.startBridge(); }
</script>
</body>
</html>
"""


@dataclass
class Partner:
    """A partner's checkout page on its own origin, embedding the bridge with its script.

    ``/checkout?bridge=URL&status_url=…&mode=…&size=…``: the Pay button calls
    ``RedirectBridge.start`` with those options; every callback lands in ``window.events``
    (``["status", s]``, ``["complete", s]``, ``["error", code]``), every ``message`` event in
    ``window.messages`` (``{origin, data}``), and the controller in ``window.flow``.
    ``autostart=1`` starts while the page loads, with no user gesture (Playwright's
    ``page.evaluate`` counts as one, so it cannot stand in for a call outside a click).
    ``/done`` is the shop's page a customer comes back to (a ``BRIDGE_RETURN_URL``).
    """

    url: str = ""

    def app(self) -> Quart:
        partner = Quart(__name__)

        @partner.route("/checkout")
        async def checkout() -> Response:
            # ``pinned=VERSION&integrity=HASH``: the tag the README shows a partner.
            name = f"redirect-bridge-{request.args['pinned']}" if "pinned" in request.args else ""
            script = f"{request.args['bridge']}/static/js/{name or 'redirect-bridge'}.js"
            pin = ""
            if "integrity" in request.args:
                pin = (
                    f' integrity="{_attribute(request.args["integrity"])}" crossorigin="anonymous"'
                )
            page = _CHECKOUT.replace("{script}", _attribute(script)).replace("{pin}", pin)
            return Response(page, content_type="text/html; charset=utf-8")

        @partner.route("/done")
        async def done() -> Response:
            # Where BRIDGE_RETURN_URL may send the customer: the outcome is in the query string.
            page = (
                "<!doctype html><html lang=en><head><meta charset=utf-8>"
                '<link rel="icon" href="data:,"><title>Order</title></head>'
                "<body><h1>Back at the shop</h1></body></html>"
            )
            return Response(page, content_type="text/html; charset=utf-8")

        return partner

    def checkout(self, bridge: Bridge, **options: str) -> str:
        return f"{self.url}/checkout?{urlencode({'bridge': bridge.url, **options})}"
