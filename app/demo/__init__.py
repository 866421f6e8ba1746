"""``redirect-bridge demo``: the whole journey on one machine, with nothing configured.

Two apps share one event loop: the bridge itself on ``port`` (fresh keys and secrets, a
database in a temporary folder) and, on ``port + 1``, a shop, the provider that signs and sends
webhooks, and the bank's 3-D Secure page (see :mod:`app.demo.shop`). The shop is deployed the
recommended way: the provider sends to the bridge, which sends the shop's backend its own
``session.updated`` events (``BRIDGE_RELAY_URL``, ``BRIDGE_RELAY_EVENTS=bridge``) and signs the
customer's return (``BRIDGE_RETURN_SECRET``).
Payments run Smart Glocal's documented confirm-first order, one-stage or two-stage (see
:mod:`app.demo.simulated_provider`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Quart

from .. import create_app
from .shop import Credentials, Site, create_shop
from .simulated_provider import Provider

__all__ = ["DemoError", "run_demo", "serve_demo"]


class DemoError(Exception):
    """The demo cannot start; the message is one line for the terminal."""


def run_demo(host: str, port: int) -> None:
    """Serve the demo until Ctrl+C, after printing the one URL to open."""
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # keep the URL in sight
    try:
        asyncio.run(_main(host, port))
    except DemoError as error:
        print(f"redirect-bridge demo: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:  # where the loop cannot take signals itself (Windows)
        pass
    print("Demo stopped.", flush=True)


async def serve_demo(
    host: str, bridge_port: int, shop_port: int, ready: asyncio.Event | None = None
) -> None:
    """Serve the bridge and the simulated shop, provider and bank until cancelled.

    ``ready`` is set once both listen. Cancelling shuts both down properly (the bridge's
    shutdown runs) and removes the temporary folder. Raises :class:`DemoError` for a busy port.
    """
    site = Site(host, bridge_port, shop_port)
    sockets = _listen(host, (bridge_port, shop_port))
    try:
        with tempfile.TemporaryDirectory(prefix="redirect-bridge-demo-") as folder:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            partner = Credentials(
                api_key=f"demo-{secrets.token_urlsafe(24)}",
                return_secret=secrets.token_urlsafe(32),
                relay_secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
            )
            bridge = _bridge_app(site, Path(folder), partner, key.public_key())
            provider = Provider(key, f"{site.bridge_url}/webhooks/smart-glocal")
            shop = create_shop(site, provider, partner)
            servers = [_Server(_config(bridge)), _Server(_config(shop))]
            await _serve(servers, sockets, ready)
    finally:
        for sock in sockets:
            sock.close()


async def _main(host: str, port: int) -> None:
    ready = asyncio.Event()
    demo = asyncio.create_task(serve_demo(host, port, port + 1, ready))
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal_number, demo.cancel)
    announced = asyncio.create_task(_announce(ready, Site(host, port, port + 1)))
    try:
        await demo
    except asyncio.CancelledError:
        pass
    finally:
        announced.cancel()


async def _announce(ready: asyncio.Event, site: Site) -> None:
    await ready.wait()
    print(
        f"\nRedirect Bridge demo: the bridge is on {site.bridge_url}, the simulated shop,"
        f" provider and bank on {site.shop_url}.\n\n"
        f"    Open {site.shop_url}/ in your browser.\n\n"
        "Press Ctrl+C to stop (the demo's keys and database are thrown away).\n",
        flush=True,
    )


def _bridge_app(
    site: Site, folder: Path, partner: Credentials, provider_key: rsa.RSAPublicKey
) -> Quart:
    public_pem = provider_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    config = {
        "SECRET_KEY": secrets.token_urlsafe(32),
        "SG_PUBLIC_KEY": public_pem.decode("ascii"),
        "API_KEYS": [partner.api_key],
        "DATABASE_URL": f"sqlite:///{folder / 'bridge.sqlite3'}",
        "ALLOW_INSECURE_ACS": True,
        "PUBLIC_URL": site.bridge_url,
        "RETURN_URL": site.return_url,  # the outcome pages lead back to the shop
        "RETURN_SECRET": partner.return_secret,  # ... signed, so the shop needs no cookie
        "RELAY_URL": site.relay_url,  # the shop's backend hears of every change ...
        "RELAY_EVENTS": "bridge",  # ... as session.updated, no provider payload to parse
        "RELAY_SECRET": partner.relay_secret,  # ... signed by the bridge (Standard Webhooks)
    }
    return create_app(config, environ={})  # "nothing configured" holds in a configured shell


def _listen(host: str, ports: tuple[int, ...]) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        for port in ports:
            sockets.append(_socket(host, port))
    except DemoError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _socket(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise DemoError(
                f"port {port} on {host} is already in use; choose another with --port"
                " (the demo uses that port and the next one)"
            ) from None
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise DemoError(f"cannot listen on {host}:{port}: {reason}") from None


def _config(app: Quart) -> uvicorn.Config:
    # The sockets are bound already; uvicorn's own logging setup and websockets stay off.
    return uvicorn.Config(
        app,
        lifespan="on",
        log_config=None,
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=3,
    )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Two servers share one loop: the demo stops both itself, on its own signal handlers.
        yield


async def _serve(
    servers: list[_Server], sockets: list[socket.socket], ready: asyncio.Event | None
) -> None:
    tasks = [
        asyncio.create_task(server.serve(sockets=[sock]))
        for server, sock in zip(servers, sockets, strict=True)
    ]
    try:
        while not all(server.started for server in servers) and not any(t.done() for t in tasks):
            await asyncio.sleep(0.02)
        if ready is not None and all(server.started for server in servers):
            ready.set()
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server in servers:  # one stopped, or we were cancelled: stop both, properly
            server.should_exit = True
        await asyncio.wait(tasks)
    for task in tasks:
        task.result()
