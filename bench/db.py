"""Straight to the bridge's database (SQLite or PostgreSQL, in the tables the bridge made):
counts, sizes, copies of a session, and how the relay's deliveries went."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Any

import asyncpg

from .common import run_async

DRAIN_LIMIT = 600.0  # seconds a relay backlog may take to clear before the run gives up


def query(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """``sql`` with SQLite's ``?`` placeholders (``$n`` on PostgreSQL)."""
    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=30)
        db.row_factory = sqlite3.Row
        with contextlib.closing(db):
            return [dict(row) for row in db.execute(sql, args)]

    async def fetch() -> list[dict[str, Any]]:
        numbered = sql
        for number in range(1, len(args) + 1):
            numbered = numbered.replace("?", f"${number}", 1)
        db = await asyncpg.connect(database_url)
        try:
            return [dict(row) for row in await db.fetch(numbered, *args)]
        finally:
            await db.close()

    return run_async(fetch())


def count(database_url: str, table: str, prefix: str = "") -> int:
    """Rows of ``table`` for sessions whose id starts with ``prefix``."""
    sql = f"SELECT count(*) AS n FROM {table} WHERE substr(session_id, 1, ?) = ?"
    return int(query(database_url, sql, len(prefix), prefix)[0]["n"])


def table_bytes(database_url: str, table: str) -> int:
    """Bytes ``table`` and its indexes take."""
    sql = "SELECT pg_total_relation_size(?::regclass) AS n"
    if database_url.startswith("sqlite:///"):
        sql = "SELECT sum(pgsize) AS n FROM dbstat WHERE name = ? OR name IN (SELECT name"
        sql += f" FROM sqlite_master WHERE tbl_name = '{table}' AND type = 'index')"
    return int(query(database_url, sql, table)[0]["n"])


def copy_session(database_url: str, template: str, ids: list[str]) -> None:
    """Sessions ``ids``, each a copy of session ``template``'s row, in one transaction."""
    (row,) = query(database_url, "SELECT * FROM sessions WHERE session_id = ?", template)
    rows = (tuple((row | {"session_id": session_id}).values()) for session_id in ids)
    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        with contextlib.closing(db):
            db.execute("PRAGMA cache_size = -1000000")  # loading only: a large page cache
            with db:
                marks = ", ".join("?" * len(row))
                db.executemany(f"INSERT INTO sessions ({', '.join(row)}) VALUES ({marks})", rows)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("ANALYZE")
        return

    async def copy() -> None:
        db = await asyncpg.connect(database_url)
        try:
            await db.copy_records_to_table("sessions", records=rows, columns=list(row))
            await db.execute("VACUUM ANALYZE sessions")
        finally:
            await db.close()

    run_async(copy())


def drain(database_url: str) -> float:
    """Wait until the relay has no delivery pending; how long that took."""
    started, sql = time.monotonic(), "SELECT count(*) AS n FROM deliveries WHERE state = 'pending'"
    while query(database_url, sql)[0]["n"]:
        if time.monotonic() - started > DRAIN_LIMIT:
            raise RuntimeError(f"the relay left deliveries pending for {DRAIN_LIMIT} s")
        time.sleep(0.2)
    return time.monotonic() - started


def relay_figures(database_url: str, prefix: str) -> dict[str, Any]:
    """How the deliveries of one measurement's webhooks (sessions ``prefix…``) went, once the
    backlog is gone: how many reached the partner while wrk was still sending, the time from
    receipt to the partner's 200, and how long after the last receipt the last one went."""
    sql = "SELECT received_at AS r, last_attempt_at AS a, attempts, state FROM deliveries"
    rows = query(database_url, sql + " WHERE substr(session_id, 1, ?) = ?", len(prefix), prefix)
    delivered = [row for row in rows if row["state"] == "delivered"]
    if not delivered:
        return {"deliveries": len(rows), "delivered": 0}
    first, last = min(row["r"] for row in rows), max(row["r"] for row in rows)
    lags = sorted((row["a"] - row["r"]) * 1000 for row in delivered)
    during = sum(row["a"] <= last for row in delivered)
    return {
        "deliveries": len(rows),
        "delivered": len(delivered),
        "retried": sum(row["attempts"] > 1 for row in rows),
        "receiving_seconds": round(last - first, 3),
        "delivered_while_receiving": during,
        "relay_rate": round(during / (last - first), 1) if last > first else 0.0,
        "lag_p50_ms": round(lags[(len(lags) - 1) // 2], 1),
        "lag_p99_ms": round(lags[int(0.99 * (len(lags) - 1))], 1),
        "backlog_cleared_s": round(max(row["a"] for row in delivered) - last, 2),
    }
