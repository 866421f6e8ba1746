"""10,000 long-polls held open on one instance (one worker process), then webhooks that wake
some of them: the server's memory while they wait, and how long each waiter hears after the
webhook's 200.

Each waiter is a different customer (session): the bridge limits a token to 120 status answers
a minute, so thousands of waiters on one token are not a case that can happen.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import time
from typing import Any

from app.signature import sign
from app.tokens import Tokens

from . import client, load, servers
from .context import Context, run_async, say
from .data import http, webhook_body
from .routes import TOKEN_TTL

WAIT = 30  # seconds each long-poll may be held: the most the bridge allows


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]


def _waiting(url: str) -> int | None:
    status, body = http("GET", f"{url}/metrics")
    match = re.search(rb"^bridge_long_poll_waiters(?:\{[^}]*\})? ([0-9.e+]+)$", body, re.M)
    return int(float(match.group(1))) if status == 200 and match else None


async def _hold_and_wake(
    ctx: Context, server: servers.Server, count: int, wake: int, concurrency: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    tokens = Tokens([ctx.credentials.secret], TOKEN_TTL, time.time)
    ids = [f"ps_wait_{number:05d}" for number in range(count)]
    answers: dict[str, asyncio.Future[client.Answer]] = {}
    connections: list[Any] = []
    gate = asyncio.Semaphore(200)  # connects at a time (the listen backlog is finite)

    async def hold(session_id: str) -> None:
        request = client.get(
            f"/api/v1/status/{tokens.mint(session_id).token}?wait={WAIT}", server.port
        )
        async with gate:
            connection = await client.connect(server.port)
        connections.append(connection)
        answers[session_id] = asyncio.ensure_future(connection.ask(request))

    baseline_rss = server.rss_bytes()
    started = time.monotonic()
    await asyncio.gather(*(hold(session_id) for session_id in ids))
    say(f"waiters: {count:,} connected and asked in {time.monotonic() - started:.1f} s")
    # Until the server reports them all waiting (its own gauge), at most 15 s.
    waiting = None
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        waiting = await loop.run_in_executor(None, _waiting, server.url)
        if waiting is not None and waiting >= count:
            break
        await asyncio.sleep(0.25)
    held_for = time.monotonic() - started
    answered_early = sum(1 for answer in answers.values() if answer.done())
    rss = max(server.rss_bytes() for _ in range(3))
    say(
        f"waiters: {waiting} waiting by the server's count, RSS {rss / 2**20:,.0f} MiB "
        f"(before: {baseline_rss / 2**20:,.0f} MiB); {answered_early} answered early"
    )

    # Wake a spread sample, `concurrency` webhooks in flight at a time; each waiter's answer is
    # timed from its own webhook's 200.
    key = ctx.credentials.private_key()
    chosen = random.Random(11).sample(ids, min(wake, count))
    prepared = []
    for session_id in chosen:
        body = webhook_body(session_id)
        prepared.append(
            (
                session_id,
                client.post(
                    "/webhooks/smart-glocal",
                    server.port,
                    body,
                    {"Content-Type": "application/json", "X-PARTNER-SIGN": sign(key, body)},
                ),
            )
        )
    delays: list[float] = []
    wrong: list[str] = []
    queue = list(reversed(prepared))

    async def deliver() -> None:
        connection = await client.connect(server.port)
        try:
            while queue:
                session_id, request = queue.pop()
                accepted = await connection.ask(request)
                if accepted.status != 200:
                    wrong.append(f"webhook {accepted.status}")
                    continue
                answer = await asyncio.wait_for(answers[session_id], timeout=WAIT)
                if answer.status != 200 or json.loads(answer.body)["status"] != "action_required":
                    wrong.append(f"waiter {answer.status} {answer.body[:60]!r}")
                    continue
                delays.append((answer.first_byte - accepted.first_byte) * 1000)
        finally:
            connection.close()

    started = time.monotonic()
    await asyncio.gather(*(deliver() for _ in range(concurrency)))
    wake_seconds = time.monotonic() - started
    rss_after = server.rss_bytes()
    for connection in connections:
        connection.close()
    for answer in answers.values():
        answer.cancel()
    if not delays:
        raise RuntimeError(f"no waiter was woken: {wrong[:5]}")
    say(
        f"waiters: woke {len(delays)} in {wake_seconds:.1f} s; "
        f"p50 {statistics.median(delays):.1f} ms, p99 {_percentile(delays, 0.99):.1f} ms, "
        f"max {max(delays):.1f} ms" + (f"; {len(wrong)} wrong: {wrong[:3]}" if wrong else "")
    )
    return {
        "waiters": count,
        "waiting_reported": waiting,
        "answered_early": answered_early,
        "seconds_to_hold": round(held_for, 1),
        "rss_bytes": rss,
        "rss_before_bytes": baseline_rss,
        "rss_after_wake_bytes": rss_after,
        "woken": len(delays),
        "webhook_concurrency": concurrency,
        "wake_seconds": round(wake_seconds, 2),
        "delay_ms": {
            "p50": statistics.median(delays),
            "p99": _percentile(delays, 0.99),
            "max": max(delays),
            "min": min(delays),
        },
        "wrong": len(wrong),
    }


def waiters_part(ctx: Context, count: int, wake: int, concurrency: int) -> dict[str, Any]:
    database_url = ctx.database_url()
    server = servers.bridge_uvicorn(
        ctx.bridge_env(database_url),
        1 if ctx.workers is not None else None,
        ctx.folder,
        name="bridge-waiters",
    )
    say(f"waiters: starting the bridge with one worker ({ctx.engine})")
    with server.start():
        load.wait_for_quiet(ctx.quiet_wait)
        monitor = load.Monitor()
        result = run_async(_hold_and_wake(ctx, server, count, wake, concurrency))
        return {**result, **monitor.stop()}
