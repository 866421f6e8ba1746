"""How the relay's claim does on a large backlog on PostgreSQL: ``python -m bench.claims``.

Not part of ``bench/run``: a private PostgreSQL (as the tests start one), the bridge's schema,
then deliveries loaded straight into the table (the bridge's own events: a body of their own),
in the shapes a backlog takes, and
``Store.claim_deliveries`` timed on each, 16 at a time as the relay claims (each claim takes
the next 16: nothing is sent), and the backlog's count the metrics make. ``--explain`` prints
the plan of a claim, made as the store makes it and rolled back.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from app.config import DB_POOL_MAX, DB_POOL_MIN, DB_TIMEOUT
from app.store import open_store, sql
from app.store.postgres import CLAIM_PLANNING, SERVER_SETTINGS, PostgresStore
from tests.postgres import PostgresServer

NOW = 2e9
_DELIVERIES = (
    "INSERT INTO deliveries (message_id, webhook_id, session_id, type, received_at, signature,"
    " body, state, attempts, next_attempt_at, retry_from)"
    " SELECT 'msg_' || gen_random_uuid(), NULL, $1 || (g % $3), 't', 1e9, NULL, '{}', $4, 0,"
    " $5, 1e9"
    " FROM generate_series(1, $2) g"
)


# What the store keeps of any backlog: no delivery due before an earlier pending one of its
# session (sql.INSERT_DELIVERY, sql.PUT_OFF_LATER).
_AS_KEPT = (
    "UPDATE deliveries d SET next_attempt_at = w.due FROM (SELECT id, max(next_attempt_at)"
    " OVER (PARTITION BY session_id ORDER BY id) AS due FROM deliveries"
    " WHERE state = 'pending') w WHERE d.id = w.id AND d.next_attempt_at < w.due"
)


async def _load(
    db: asyncpg.Connection, tag: str, count: int, sessions: int, state: str, due: float
) -> None:
    await db.execute(_DELIVERIES, tag, count, sessions, state, due)


# Each shape: what is loaded, in order (tag, deliveries, sessions, state, due at).
SHAPES: dict[str, list[tuple[str, int, int, str, float]]] = {
    "200,000 pending, one per session, after 1,000,000 delivered": [
        ("done_", 1_000_000, 1_000_000, "delivered", 1e9),
        ("ps_", 200_000, 200_000, "pending", 1e9),
    ],
    "200,000 pending, ten per session, after 1,000,000 delivered": [
        ("done_", 1_000_000, 1_000_000, "delivered", 1e9),
        ("ps_", 200_000, 20_000, "pending", 1e9),
    ],
    "50,000 sessions' first deliveries waiting to be retried, 150,000 due behind them": [
        ("done_", 1_000_000, 1_000_000, "delivered", 1e9),
        ("wait_", 50_000, 50_000, "pending", NOW + 600),
        ("wait_", 150_000, 50_000, "pending", 1e9),
        ("ps_", 1_000, 1_000, "pending", 1e9),
    ],
    "200,000 pending waiting to be retried (the partner down), then 1,000 due": [
        ("done_", 1_000_000, 1_000_000, "delivered", 1e9),
        ("wait_", 200_000, 200_000, "pending", NOW + 600),
        ("ps_", 1_000, 1_000, "pending", 1e9),
    ],
}


async def _timed(call: Callable[[], Awaitable[object]], times: int) -> float:
    """The median milliseconds of ``times`` calls."""
    took = []
    for _ in range(times):
        began = time.perf_counter()
        await call()
        took.append(1000 * (time.perf_counter() - began))
    return sorted(took)[len(took) // 2]


async def _plan(db: asyncpg.Connection) -> str:
    """A claim's plan as the store's connections make it, in a transaction rolled back."""
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(CLAIM_PLANNING)
        statement = sql.POSTGRES.CLAIM_DELIVERIES_SKIP_LOCKED
        rows = await db.fetch(
            f"EXPLAIN (ANALYZE, BUFFERS) {statement}", NOW + 60, NOW, NOW, NOW, 16
        )
        return "\n".join(str(row[0]) for row in rows)
    finally:
        await transaction.rollback()


async def _shape(server: PostgresServer, name: str, explain: bool, analyse: bool) -> None:
    url = server.new_database()
    store = open_store(url, pool_min=DB_POOL_MIN, pool_max=DB_POOL_MAX, timeout=DB_TIMEOUT)
    assert isinstance(store, PostgresStore)
    await store.open()
    db = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    try:
        if not analyse:  # statistics as autovacuum took them while nothing was pending
            await db.execute("ALTER TABLE deliveries SET (autovacuum_enabled = false)")
            await db.execute("ANALYZE deliveries")
        for tag, count, sessions, state, due in SHAPES[name]:
            await _load(db, tag, count, sessions, state, due)
        await db.execute(_AS_KEPT)
        if analyse:
            await db.execute("ANALYZE deliveries")
        if explain:
            print(await _plan(db), flush=True)
        claimed = len(await store.claim_deliveries(NOW, NOW + 60, 16))
        median = await _timed(lambda: store.claim_deliveries(NOW, NOW + 60, 16), 9)
        backlog = await _timed(store.relay_backlog, 3)
        stats = "analysed" if analyse else "analysed before loading"
        print(f"| {name} | {stats} | {claimed} | {median:,.1f} | {backlog:,.1f} |", flush=True)
    finally:
        await db.close()
        await store.close()


async def _run(server: PostgresServer, explain: bool, only: str) -> None:
    print("| backlog | statistics | claimed | claim ms (median of 9) | backlog count ms |")
    print("|---|---|---|---|---|")
    for name in (name for name in SHAPES if only in name):
        for analyse in (False, True):
            await _shape(server, name, explain, analyse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--explain", action="store_true", help="print each claim's plan")
    parser.add_argument("--only", default="", help="the backlogs whose names hold this text")
    options = parser.parse_args()
    server = PostgresServer()
    server.start()
    try:
        asyncio.run(_run(server, options.explain, options.only))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
