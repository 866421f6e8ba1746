"""10,000 long-polls held open on one instance (one worker process), each a different customer
(a token gets 120 status answers a minute), then webhooks that wake some of them: the server's
memory per waiter, and how long each waiter hears after its webhook's 200."""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import time
from typing import Any

from app.tokens import Tokens

from . import client, servers
from .common import Run, http, run_async, say, sign_webhooks
from .routes import TOKEN_TTL
from .wrk import Monitor, wait_for_quiet

WAIT = 30  # seconds each long-poll may be held: the most the bridge allows
WAKE, WAKE_CONCURRENCY = 1000, 8  # waiters woken by a webhook each; webhooks in flight


def _waiting(url: str) -> int | None:
    """The bridge's own gauge of waiting long-polls."""
    status, body = http("GET", f"{url}/metrics")
    found = re.search(rb"^bridge_long_poll_waiters(?:\{[^}]*\})? ([0-9.e+]+)$", body, re.M)
    return int(float(found.group(1))) if status == 200 and found else None


async def _hold_and_wake(run: Run, server: servers.Server) -> dict[str, Any]:
    count, port = run.settings.waiters, server.port
    tokens = Tokens([run.credentials.secret], TOKEN_TTL, time.time)
    ids = [f"ps_wait_{number:05d}" for number in range(count)]
    chosen = random.Random(11).sample(ids, min(WAKE, count))
    signed = sign_webhooks(run.credentials, chosen, run.folder / "waiters-wake.txt")
    webhooks = client.webhooks(signed, port)
    answers: dict[str, asyncio.Future[client.Answer]] = {}
    connections: list[client.Connection] = []
    gate = asyncio.Semaphore(200)  # connects at a time (the listen backlog is finite)

    async def hold(session_id: str) -> None:
        path = f"/api/v1/status/{tokens.mint(session_id).token}?wait={WAIT}"
        async with gate:
            connections.append(await client.connect(port))
        answers[session_id] = asyncio.ensure_future(
            connections[-1].ask(client.request("GET", path, port, {}))
        )

    idle = server.rss_bytes()
    started = time.monotonic()
    await asyncio.gather(*map(hold, ids))
    say(f"waiters: {count:,} connected and asked in {time.monotonic() - started:.1f} s")
    waiting, deadline = None, time.monotonic() + 15  # until the server counts them all
    while time.monotonic() < deadline and (waiting or 0) < count:
        await asyncio.sleep(0.25)
        waiting = await asyncio.get_running_loop().run_in_executor(None, _waiting, server.url)
    held_for, early = time.monotonic() - started, sum(answer.done() for answer in answers.values())
    rss = max(server.rss_bytes() for _ in range(3))
    per_waiter = (rss - idle) / count / 1000
    say(f"waiters: {waiting} by the server's count, {per_waiter:.1f} KB each, {early} answered")

    # Each waiter's answer is timed from its own webhook's 200, a few webhooks in flight.
    delays: list[float] = []
    wrong: list[str] = []
    queue = list(webhooks.items())[::-1]

    async def wake() -> None:
        connection = await client.connect(port)
        while queue:
            session_id, request = queue.pop()
            if (accepted := await connection.ask(request)).status != 200:
                wrong.append(f"webhook {accepted.status}")
                continue
            answer = await asyncio.wait_for(answers[session_id], timeout=WAIT)
            if answer.status != 200 or json.loads(answer.body)["status"] != "action_required":
                wrong.append(f"waiter {answer.status} {answer.body[:60]!r}")
                continue
            delays.append((answer.first_byte - accepted.first_byte) * 1000)
        connection.transport.close()

    started = time.monotonic()
    await asyncio.gather(*(wake() for _ in range(WAKE_CONCURRENCY)))
    wake_seconds = time.monotonic() - started
    for answer in answers.values():
        answer.cancel()
    for connection in connections:
        connection.transport.close()
    if not delays:
        raise RuntimeError(f"no waiter was woken: {wrong[:5]}")
    delays.sort()
    delay = {"min": delays[0], "p50": statistics.median(delays), "max": delays[-1]}
    delay["p99"] = delays[min(int(len(delays) * 0.99), len(delays) - 1)]
    say(f"waiters: woke {len(delays)}, p99 {delay['p99']:.1f} ms, {len(wrong)} wrong answers")
    return {
        "waiters": count,
        "waiting_reported": waiting,
        "answered_early": early,
        "seconds_to_hold": round(held_for, 1),
        "rss_bytes": rss,
        "rss_before_bytes": idle,
        "kb_per_waiter": round(per_waiter, 2),
        "woken": len(delays),
        "webhook_concurrency": WAKE_CONCURRENCY,
        "wake_seconds": round(wake_seconds, 2),
        "delay_ms": delay,
        "wrong": len(wrong),
    }


def waiters_part(run: Run) -> dict[str, Any]:
    server = servers.bridge(run, run.database_url(), "bridge-waiters", workers=1)
    say(f"waiters: starting the bridge with one worker ({run.settings.engine})")
    with server.start():
        wait_for_quiet(run)
        monitor = Monitor(run.roots)
        return run_async(_hold_and_wake(run, server)) | monitor.stop()
