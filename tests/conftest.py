from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Quart
from quart.testing.app import TestApp
from quart.typing import TestClientProtocol

from app import create_app
from app.signature import sign
from app.store import Store
from app.store.sqlite import WRITER_THREAD

from .database import open_store
from .payloads import webhook
from .postgres import PostgresServer

API_KEY = "partner-key-0123456789"
RELAY_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # Standard Webhooks' example secret


class FakeClock:
    """The bridge's clock, moved by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On several workers (``scripts/test``, ``--dist loadgroup``) a test file runs on one
    worker, its module fixtures set up once; a browser test file once per storage engine, so
    that the browser tests, each engine's bridges started once a file, share the workers.
    Each worker has its own Chromium, PostgreSQL server and loopback ports."""
    if not config.pluginmanager.has_plugin("xdist"):
        return
    for item in items:
        group = item.path.name
        if item.path.parent.name == "browser":
            callspec = getattr(item, "callspec", None)
            engine = callspec.params.get("engine", "") if callspec else ""
            group = f"browser/{group}[{engine}]"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(autouse=True)
def no_store_left_open(request: pytest.FixtureRequest) -> None:
    """A SQLite store a test opened is closed by its end: one left open goes on writing (its
    sweeper, its housekeeping) through the tests after it, and a test that counts commits
    counts those too. Checked as each test starts, for every test before it; the browser
    tests' bridges serve their whole folder, and are closed when it is done."""
    if request.node.path.parent.name == "browser":
        return
    left = [t.name for t in threading.enumerate() if t.name.startswith(WRITER_THREAD)]
    assert not left, f"an earlier test left {len(left)} SQLite store(s) open: {left}"


@pytest.fixture(scope="session")
def provider_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every test that stores anything runs once on each engine."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/bridge.sqlite3"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A store opened on each engine, as a bridge with the default settings opens it."""
    opened = open_store(database_url)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
def config(database_url: str, provider_key: rsa.RSAPrivateKey, clock: FakeClock) -> dict[str, Any]:
    return {
        "DATABASE_URL": database_url,
        "SECRET_KEY": "test-secret-key-0123456789",
        "SG_PUBLIC_KEY": public_pem(provider_key),
        "API_KEYS": [API_KEY],
        "PUBLIC_URL": "https://bridge.test",
        "RELAY_SECRET": RELAY_SECRET,  # what signs the relay, when a test turns it on
    }


@pytest.fixture
async def app(
    config: dict[str, Any], clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Quart]:
    application = create_app(config, clock=clock)
    async with running(application):  # runs start-up and shut-down
        yield application
    no_fast_path_faults(application, request)


def running(application: Quart) -> TestApp:
    """``async with running(app):`` the app's start-up and shut-down, as ``app.test_app()``
    runs them but given 30 s each instead of Quart's 6: stopping closes the relay's client, the
    sweeper and the store's pool, which a machine busy with other tests can make slow."""
    return TestApp(application, startup_timeout=30, shutdown_timeout=30)


def no_fast_path_faults(application: Quart, request: pytest.FixtureRequest) -> None:
    """app.front answers what the app would, and leaves the app to answer when it fails: a
    fault would go unseen but for its log line and its counter. Every test fails on one,
    unless it is marked ``fast_path_fault`` (it makes one on purpose)."""
    if request.node.get_closest_marker("fast_path_fault") is None:
        faults = application.extensions["bridge"].metrics.fast_path_faults
        counted = {
            sample.labels["route"]: sample.value
            for metric in faults.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        }
        assert not any(counted.values()), f"app.front failed and the app answered: {counted}"


@pytest.fixture
def client(app: Quart) -> TestClientProtocol:
    return app.test_client()


class Provider:
    """Sends webhooks the way Smart Glocal does: raw bytes, signed."""

    def __init__(self, client: TestClientProtocol, key: rsa.RSAPrivateKey) -> None:
        self.client = client
        self.key = key

    async def send(self, payload: dict[str, Any] | bytes, *, signature: str | None = None) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-PARTNER-SIGN": signature if signature is not None else sign(self.key, body),
        }
        return await self.client.post("/webhooks/smart-glocal", data=body, headers=headers)

    async def deliver(self, kind: str, session_id: str = "ps_1", **fields: Any) -> Any:
        response = await self.send(webhook(kind, session_id, **fields))
        assert response.status_code == 200, await response.get_data(as_text=True)
        return response


@pytest.fixture
def provider(client: TestClientProtocol, provider_key: rsa.RSAPrivateKey) -> Provider:
    return Provider(client, provider_key)


class Partner:
    """The partner's backend: Bearer key, JSON API."""

    def __init__(self, client: TestClientProtocol) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {API_KEY}"}

    async def token(self, session_id: str = "ps_1") -> str:
        response = await self.client.post(
            f"/api/v1/sessions/{session_id}/tokens", headers=self.headers
        )
        assert response.status_code == 201
        return (await response.get_json())["token"]

    async def session(self, session_id: str = "ps_1") -> Any:
        return await self.client.get(f"/api/v1/sessions/{session_id}", headers=self.headers)


@pytest.fixture
def partner(client: TestClientProtocol) -> Partner:
    return Partner(client)


@dataclass
class Deployment:
    """An app started with its own settings, and the parties that talk to it."""

    app: Quart
    client: TestClientProtocol
    provider: Provider
    partner: Partner


Configured = Callable[..., AbstractAsyncContextManager[Deployment]]


@pytest.fixture
def configured(
    config: dict[str, Any],
    provider_key: rsa.RSAPrivateKey,
    clock: FakeClock,
    request: pytest.FixtureRequest,
) -> Configured:
    """``async with configured(RETURN_URL=...) as bridge:`` for a test that changes settings."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Deployment]:
        application = create_app({**config, **overrides}, clock=clock)
        async with running(application):
            client = application.test_client()
            yield Deployment(application, client, Provider(client, provider_key), Partner(client))
        no_fast_path_faults(application, request)

    return start


async def read_twice(client: TestClientProtocol, path: str, **kwargs: Any) -> Any:
    """``GET path`` twice, the answers the same in every byte but the request id: the first
    built by the app, the second sent by ``app.front`` (kept, for a page that may be)."""
    by_app = path
    if path.startswith("/api/v1/status/"):  # a query app.front leaves to the app
        by_app += ("&" if "?" in path else "?") + "via=app"
    first, second = [await client.get(where, **kwargs) for where in (by_app, path)]
    assert await first.get_data() == await second.get_data()
    assert first.status_code == second.status_code
    assert without_request_id(first.headers) == without_request_id(second.headers)
    return second


def without_request_id(headers: Any) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers.items() if k.lower() != "x-request-id")
