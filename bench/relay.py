"""The webhook route with the relay on (``BRIDGE_RELAY_URL`` pointing at a partner that answers
200 at once) against the same route with it off: two bridges side by side, each on its own
database, measured one after the other round after round with the same signed webhooks.

With the relay on, every webhook answered 200 is also a delivery to send: the figures say what
that costs the route (the delivery row in the webhook's own transaction, and the sender's
claims, posts and outcomes in the same processes on the same cores), and how far behind the
partner hears (from the bridge's receipt to the partner's 200, and how long the backlog left at
the end of a measurement takes to clear).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from . import servers, wrk
from .context import Context, run_async, say
from .data import http, signed_webhooks
from .routes import LABELS, calibrate_webhooks, measure, median
from .storage import count_webhooks

KINDS = ("off", "on")
DRAIN_LIMIT = 600.0  # seconds a backlog may take to clear before the run gives up on it


def partner(ctx: Context) -> servers.Server:
    """``bench/partner.py``: answers every POST 200 at once, counts them."""
    port = servers.free_port()
    command = [sys.executable, "-m", "bench.partner", "--port", str(port)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
    return servers.Server("partner", command, env, port, ctx.folder / f"partner-{port}.log")


def _rows(database_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """``sql`` with SQLite's ``?`` (``$n`` on PostgreSQL), run straight on the database."""
    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30)
        try:
            return list(db.execute(sql, args).fetchall())
        finally:
            db.close()

    async def fetch() -> list[tuple[Any, ...]]:
        db = await asyncpg.connect(database_url)
        try:
            numbered = sql
            for number in range(1, len(args) + 1):
                numbered = numbered.replace("?", f"${number}", 1)
            return [tuple(row) for row in await db.fetch(numbered, *args)]
        finally:
            await db.close()

    return list(run_async(fetch()))


def drain(database_url: str) -> float:
    """Wait until no delivery is pending; how long that took."""
    started = time.monotonic()
    while True:
        ((pending,),) = _rows(
            database_url, "SELECT count(*) FROM deliveries WHERE state = ?", "pending"
        )
        if not pending:
            return time.monotonic() - started
        if time.monotonic() - started > DRAIN_LIMIT:
            raise RuntimeError(f"the relay left {pending} deliveries pending for {DRAIN_LIMIT} s")
        time.sleep(0.2)


def _quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def relay_figures(database_url: str, prefix: str) -> dict[str, Any]:
    """How the deliveries of one measurement's webhooks (sessions ``prefix…``) went, once the
    backlog is gone: how many reached the partner while wrk was still sending, the time from
    receipt to the partner's 200, and how long after the last receipt the last one went."""
    rows = _rows(
        database_url,
        "SELECT received_at, last_attempt_at, attempts, state FROM deliveries"
        " WHERE session_id >= ? AND session_id < ?",
        prefix,
        prefix + "\U0010ffff",
    )
    if not rows:
        return {"deliveries": 0}
    first = min(row[0] for row in rows)
    last = max(row[0] for row in rows)
    delivered = [row for row in rows if row[3] == "delivered"]
    lags = [(row[1] - row[0]) * 1000 for row in delivered]
    during = sum(1 for row in delivered if row[1] <= last)
    return {
        "deliveries": len(rows),
        "delivered": len(delivered),
        "retried": sum(1 for row in rows if row[2] > 1),
        "receiving_seconds": round(last - first, 3),
        "delivered_while_receiving": during,
        "relay_rate": round(during / (last - first), 1) if last > first else 0.0,
        "lag_p50_ms": round(_quantile(lags, 0.5), 1) if lags else None,
        "lag_p99_ms": round(_quantile(lags, 0.99), 1) if lags else None,
        "backlog_cleared_s": round(max(row[1] for row in delivered) - last, 2)
        if delivered
        else None,
    }


def relay_part(ctx: Context) -> dict[str, Any]:
    """Both bridges (``serve``, the run's workers and engine), the partner beside them."""
    with contextlib.ExitStack() as stack:
        backend = partner(ctx)
        stack.enter_context(backend.start())
        bridges: dict[str, tuple[servers.Server, str]] = {}
        for kind in KINDS:
            database_url = ctx.database_url()
            env = ctx.bridge_env(database_url)
            if kind == "on":
                env["BRIDGE_RELAY_URL"] = f"{backend.url}/smart-glocal"
            server = servers.bridge_uvicorn(env, ctx.workers, ctx.folder, name=f"relay-{kind}")
            say(
                f"starting the bridge with the relay {kind} ({ctx.worker_count} workers,"
                f" {ctx.engine})"
            )
            stack.enter_context(server.start())
            bridges[kind] = (server, database_url)

        needed = 0
        for kind, (server, database_url) in bridges.items():
            needed = max(needed, calibrate_webhooks(ctx, server, f"relay_{kind}"))
            if kind == "on":
                say(f"relay-on: the warm-up's deliveries sent in {drain(database_url):.1f} s more")

        # One pool of signed webhooks per round and attempt, sent to both bridges (each has a
        # database of its own, so each body is new to each).
        pools: dict[tuple[int, int], Path] = {}

        def pool(round_: int, attempt: int) -> Path:
            if (round_, attempt) not in pools:
                say(f"signing {needed} webhooks")
                started = time.monotonic()
                pools[round_, attempt] = signed_webhooks(
                    ctx.credentials,
                    f"ps_relay_r{round_}a{attempt}_",
                    needed,
                    ctx.folder / f"relay-webhooks-{round_}-{attempt}.txt",
                )
                say(f"signed in {time.monotonic() - started:.1f} s")
            return pools[round_, attempt]

        results: dict[str, list[wrk.Result]] = {kind: [] for kind in KINDS}
        checks: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        for round_ in range(ctx.rounds):
            if ctx.rounds > 1:
                say(f"--- round {round_ + 1} of {ctx.rounds}")
            # Each goes first in turn: neither always meets the machine as the other left it.
            for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
                server, database_url = bridges[kind]

                def fresh(
                    attempt: int,
                    round_: int = round_,
                    kind: str = kind,
                    database_url: str = database_url,
                ) -> tuple[str, ...]:
                    if kind == "on":  # the last attempt's backlog goes before this one starts
                        drain(database_url)
                    return (str(pool(round_, attempt)), str(wrk.THREADS))

                say(f"relay-{kind}: {LABELS['webhook']} for {ctx.duration:.0f} s")
                result = measure(
                    ctx,
                    f"{server.url}/webhooks/smart-glocal",
                    "bodies",
                    fresh(0),
                    warmup=False,
                    fresh=fresh,
                )
                prefix = f"ps_relay_r{round_}a{result.attempt}_"
                check: dict[str, Any] = {
                    "round": round_,
                    "pool": needed,
                    "requests": result.requests,
                    "stored": count_webhooks(database_url, prefix),
                    "wrapped": result.wrapped,
                }
                if result.wrapped:
                    ctx.note(f"relay-{kind}: the webhook pool ran out ({needed})")
                if kind == "on":
                    drained = drain(database_url)
                    check.update(relay_figures(database_url, prefix))
                    check["drain_wait_s"] = round(drained, 2)
                results[kind].append(result)
                checks[kind].append(check)
                say(
                    f"relay-{kind}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} ms,"
                    f" p99 {result.p99_ms:.1f} ms"
                    + (f", errors {result.errors}" if result.error_count else "")
                    + (
                        f"; relayed {check['delivered_while_receiving']:,} while receiving"
                        f" ({check['relay_rate']:,.0f}/s), receipt to partner's 200 p50"
                        f" {check['lag_p50_ms']} ms p99 {check['lag_p99_ms']} ms, backlog"
                        f" cleared {check['backlog_cleared_s']} s after the last webhook"
                        if kind == "on" and check.get("delivered")
                        else ""
                    )
                )
        status, count = http("GET", f"{backend.url}/count")
        received = int(count) if status == 200 else None
        ((recorded,),) = _rows(bridges["on"][1], "SELECT count(*) FROM deliveries")
    return {
        "off": median(results["off"]),
        "on": median(results["on"]),
        "checks": checks,
        "partner_received": received,  # every POST, the warm-up's too
        "deliveries_recorded": recorded,
        "engine": ctx.engine,
    }
