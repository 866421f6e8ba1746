"""kill -9 in the middle of a burst: every webhook answered 200 survives, on both engines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign

from .conftest import public_pem
from .database import query
from .payloads import webhook
from .servers import Served, environment

WEBHOOKS = 5000
SENDERS = 50


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    # Signing 5,000 bodies takes a few seconds; `serve` takes no RSA key under 2048 bits.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def server(database_url: str, signing_key: rsa.RSAPrivateKey) -> Iterator[Served]:
    settings = environment(
        DATABASE_URL=database_url,
        SECRET_KEY="crash-secret-0123456789-0123456789",
        SG_PUBLIC_KEY=public_pem(signing_key),
    )
    running = Served(settings, workers=2).start()
    yield running
    running.stop()


def requests(key: rsa.RSAPrivateKey, port: int) -> list[tuple[str, bytes]]:
    prepared = []
    for number in range(WEBHOOKS):
        session_id = f"ps_crash_{number}"
        body = json.dumps(webhook("action_required", session_id)).encode()
        head = (
            f"POST /webhooks/smart-glocal HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-PARTNER-SIGN: {sign(key, body)}\r\n\r\n"
        )
        prepared.append((session_id, head.encode() + body))
    return prepared


async def burst(port: int, queue: list[tuple[str, bytes]], answered: set[str]) -> None:
    """One sender: keep-alive requests until the queue is empty or the server is gone."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        while queue:
            session_id, request = queue.pop()
            writer.write(request)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length)
            if b" 200 " in status and json.loads(body)["status"] == "accepted":
                answered.add(session_id)
    except (OSError, asyncio.IncompleteReadError, ValueError):
        return  # killed under us: what was not answered need not be there
    finally:
        writer.close()


async def integrity(database_url: str) -> list[Any]:
    if database_url.startswith("sqlite"):
        return await query(database_url, "PRAGMA integrity_check")
    await query(database_url, "CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA public")
    checked = await query(
        database_url,
        "SELECT public.bt_index_check(c.oid, true) FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relnamespace = current_schema()::regnamespace",
    )
    return [("ok",)] if checked else [("no indexes were checked",)]


async def test_every_webhook_answered_200_survives_kill_9(
    server: Served, signing_key: rsa.RSAPrivateKey, database_url: str
) -> None:
    queue = requests(signing_key, server.port)
    answered: set[str] = set()
    senders = asyncio.gather(*(burst(server.port, queue, answered) for _ in range(SENDERS)))
    while len(answered) < WEBHOOKS // 5:  # well into the burst
        await asyncio.sleep(0.01)
    server.kill()
    await senders
    assert WEBHOOKS // 5 <= len(answered) < WEBHOOKS  # the kill came mid-burst

    server.start()  # what a restart finds
    stored = {row[0] for row in await query(database_url, "SELECT session_id FROM webhooks")}
    assert answered <= stored
    sessions = await query(
        database_url, "SELECT session_id FROM sessions WHERE status = 'action_required'"
    )
    assert answered <= {row[0] for row in sessions}
    assert await integrity(database_url) == [("ok",)]
