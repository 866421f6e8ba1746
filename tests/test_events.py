"""``GET /api/v1/status/{token}/events``: the status as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .conftest import Partner, Provider


async def next_event(connection: Any, buffer: list[bytes]) -> dict[str, str]:
    """Read until one whole event (a block ending in a blank line) that is not a comment."""
    while True:
        text = b"".join(buffer).decode()
        while "\n\n" in text:
            block, text = text.split("\n\n", 1)
            buffer[:] = [text.encode()]
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "data" in fields or "retry" in fields:
                return fields
        buffer.append(await asyncio.wait_for(connection.receive(), timeout=5))


async def test_the_stream_sends_the_status_and_every_change(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    origin = {"Origin": "https://shop.test"}
    async with client.request(f"/api/v1/status/{token}/events", headers=origin) as connection:
        await connection.send_complete()
        buffer: list[bytes] = []
        assert (await next_event(connection, buffer))["retry"] == "2000"
        first = await next_event(connection, buffer)
        assert first["event"] == "status"
        assert json.loads(first["data"])["status"] == "pending"
        await provider.deliver("action_required")
        second = await next_event(connection, buffer)
        answer = json.loads(second["data"])
        assert answer["status"] == "action_required"
        assert answer["action_url"] == f"https://bridge.test/pay/{token}"
        assert second["id"] != first["id"]
        await connection.disconnect()
    assert connection.status_code == 200
    assert connection.headers["Content-Type"] == "text/event-stream"
    assert connection.headers["Access-Control-Allow-Origin"] == "*"


async def test_last_event_id_resumes_without_repeating(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    etag = (await client.get(f"/api/v1/status/{token}")).headers["ETag"].strip('"')
    headers = {"Last-Event-ID": etag}
    async with client.request(f"/api/v1/status/{token}/events", headers=headers) as connection:
        await connection.send_complete()
        buffer: list[bytes] = []
        await next_event(connection, buffer)  # retry
        waiting = asyncio.create_task(next_event(connection, buffer))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # nothing new to say
        await provider.deliver("payment_finished", session_status="accepted")
        event = await waiting
        assert json.loads(event["data"])["status"] == "succeeded"
        await connection.disconnect()


async def test_a_bad_token_has_no_stream(client: Any) -> None:
    response = await client.get("/api/v1/status/garbage/events")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"
