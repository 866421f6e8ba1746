"""When the database goes away: 503 and nothing half-written; back by itself when it returns."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from app import create_app

from .conftest import API_KEY, FakeClock, Partner, Provider, public_pem
from .payloads import webhook
from .postgres import PostgresServer


@asynccontextmanager
async def bridge_on(
    database_url: str, key: rsa.RSAPrivateKey, clock: FakeClock
) -> AsyncIterator[tuple[Any, Provider, Partner]]:
    app = create_app(
        {
            "DATABASE_URL": database_url,
            "SECRET_KEY": "resilience-secret-0123456789",
            "SG_PUBLIC_KEY": public_pem(key),
            "API_KEYS": [API_KEY],
            "DB_TIMEOUT": "0.5",
        },
        environ={},
        clock=clock,
    )
    async with app.test_app():
        client = app.test_client()
        yield client, Provider(client, key), Partner(client)


async def until_ready(client: Any) -> None:
    for _ in range(100):
        if (await client.get("/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the bridge did not become ready again")


async def test_postgres_going_away_is_503_with_nothing_half_written_then_recovers(
    provider_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    server = PostgresServer()  # its own: stopping it must not disturb any other test
    await asyncio.to_thread(server.start)
    try:
        async with bridge_on(server.new_database(), provider_key, clock) as (client, sg, partner):
            token = await partner.token()
            await sg.deliver("action_required")
            await asyncio.to_thread(server.pause)

            finished = json.dumps(webhook("payment_finished", session_status="accepted")).encode()
            refused = await sg.send(finished)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "5"
            assert (await refused.get_json())["error"]["code"] == "storage_unavailable"
            assert (await client.get("/readyz")).status_code == 503
            page = await client.get(f"/pay/{token}")
            assert page.status_code == 503
            assert page.headers["Cache-Control"] == "no-store"

            await asyncio.to_thread(server.resume)
            await until_ready(client)
            retried = await sg.send(finished)  # the provider's retry: new, so nothing was kept
            assert (retried.status_code, await retried.get_json()) == (200, {"status": "accepted"})
            session = await (await partner.session()).get_json()
            assert session["status"] == "succeeded"
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_locked_sqlite_database_is_503_then_recovers(
    tmp_path: Path, provider_key: rsa.RSAPrivateKey, clock: FakeClock
) -> None:
    path = tmp_path / "bridge.sqlite3"
    async with bridge_on(f"sqlite:///{path}", provider_key, clock) as (client, sg, partner):
        await sg.deliver("action_required")
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            finished = json.dumps(webhook("payment_finished", session_status="accepted")).encode()
            refused = await sg.send(finished)
            assert refused.status_code == 503
            assert (await refused.get_json())["error"]["code"] == "storage_unavailable"
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        retried = await sg.send(finished)
        assert (retried.status_code, await retried.get_json()) == (200, {"status": "accepted"})
        assert (await (await partner.session()).get_json())["status"] == "succeeded"
