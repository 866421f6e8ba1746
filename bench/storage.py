"""Straight to the database: the schema (the app's own migrations), bulk sessions, counts, sizes."""

from __future__ import annotations

import base64
import random
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import asyncpg

from app import lifecycle
from app.provider import parse_webhook
from app.store import SESSION_COLUMNS, open_store, session_row
from tests.payloads import redirect, webhook

from .context import run_async, say

COLUMNS = [column.strip() for column in SESSION_COLUMNS.split(",")]


def _sqlite_path(database_url: str) -> str:
    return database_url.removeprefix("sqlite:///")


def create_schema(database_url: str) -> None:
    """The bridge's own store creates its tables, exactly as at start-up."""

    async def open_and_close() -> None:
        store = open_store(database_url)
        await store.open()
        await store.close()

    run_async(open_and_close())


def template_row(now: float) -> tuple[Any, ...]:
    """A session as the bridge stores it after ``action_required``: the real code computes it.

    Sized as a real 3-D Secure step: a PaReq of 1,200 base64 characters (they run from a few
    hundred to a few thousand), an MD of 36, and a bank URL with a query string of its own.
    """
    noise = random.Random(3230)
    pareq = base64.b64encode(noise.randbytes(900)).decode()
    instruction = redirect(
        url="https://acs.issuer-bank.example/3ds/v1/challenge?txid=8f1e0c2a-6b1d-4c55-9a7e-2f",
        base_url="https://acs.issuer-bank.example/3ds/v1/challenge",
        qs={"txid": "8f1e0c2a-6b1d-4c55-9a7e-2f"},
        params={"PaReq": pareq, "MD": "0b9f5b2e-3f4c-4d8e-a8c1-5f0e2d7c9a41"},
    )
    parsed = parse_webhook(webhook("action_required", "ps_template", interaction=instruction))
    session = lifecycle.apply(None, parsed, received_at=now, action_timeout=3600)
    assert session is not None
    return session_row(session)


def session_ids(start: int, count: int, seed: int = 20240527) -> list[str]:
    """Provider-like ids (``ps_`` and 24 hex digits), in no order: inserted as they would arrive."""
    generator = random.Random(seed + start)
    return [f"ps_{generator.getrandbits(96):024x}" for _ in range(count)]


def _rows(ids: list[str], template: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    rest = template[1:]
    for session_id in ids:
        yield (session_id, *rest)


def insert_sessions(database_url: str, ids: list[str], now: float) -> None:
    """Bulk-load sessions (no HTTP): 100,000 a transaction, progress on stderr."""
    template = template_row(now)
    batch = 100_000
    started = time.monotonic()

    def progress(done: int) -> None:
        if len(ids) > batch:
            say(f"  inserted {done:,} of {len(ids):,} ({time.monotonic() - started:.0f} s)")

    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(_sqlite_path(database_url), isolation_level=None)
        insert = (
            f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ({', '.join('?' * len(COLUMNS))})"
        )
        try:
            db.execute("PRAGMA cache_size = -1000000")  # loading only: a large page cache
            for start in range(0, len(ids), batch):
                db.execute("BEGIN")
                db.executemany(insert, _rows(ids[start : start + batch], template))
                db.execute("COMMIT")
                progress(min(start + batch, len(ids)))
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("ANALYZE")
        finally:
            db.close()
        return

    async def copy() -> None:
        db = await asyncpg.connect(database_url)
        try:
            for start in range(0, len(ids), batch):
                await db.copy_records_to_table(
                    "sessions",
                    records=list(_rows(ids[start : start + batch], template)),
                    columns=COLUMNS,
                )
                progress(min(start + batch, len(ids)))
            await db.execute("VACUUM ANALYZE sessions")
        finally:
            await db.close()

    run_async(copy())


def session_bytes(database_url: str) -> dict[str, Any]:
    """Sessions stored, and the bytes they take (table and its indexes)."""
    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(_sqlite_path(database_url))
        try:
            count = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
            page_size = db.execute("PRAGMA page_size").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            database = (pages - free) * page_size
            try:
                table = db.execute(
                    "SELECT sum(pgsize) FROM dbstat WHERE name = 'sessions'"
                    " OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'sessions'"
                    " AND type = 'index')"
                ).fetchone()[0]
            except sqlite3.OperationalError:  # no dbstat in this SQLite build
                table = database
        finally:
            db.close()
        return {"sessions": count, "table_bytes": table, "database_bytes": database}

    async def sizes() -> dict[str, Any]:
        db = await asyncpg.connect(database_url)
        try:
            count = await db.fetchval("SELECT count(*) FROM sessions")
            table = await db.fetchval("SELECT pg_total_relation_size('sessions')")
            schema = await db.fetchval(
                "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
            )
        finally:
            await db.close()
        return {"sessions": count, "table_bytes": table, "database_bytes": int(schema or 0)}

    return run_async(sizes())


def webhook_bytes(database_url: str) -> float:
    """Bytes the webhook log takes per stored webhook (table and indexes)."""
    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(_sqlite_path(database_url), timeout=30)
        try:
            count = db.execute("SELECT count(*) FROM webhooks").fetchone()[0]
            try:
                size = db.execute(
                    "SELECT sum(pgsize) FROM dbstat WHERE name = 'webhooks'"
                    " OR name IN (SELECT name FROM sqlite_master WHERE tbl_name = 'webhooks'"
                    " AND type = 'index')"
                ).fetchone()[0]
            except sqlite3.OperationalError:
                return 0.0
        finally:
            db.close()
        return size / count if count else 0.0

    async def measure() -> float:
        db = await asyncpg.connect(database_url)
        try:
            count = await db.fetchval("SELECT count(*) FROM webhooks")
            size = await db.fetchval("SELECT pg_total_relation_size('webhooks')")
        finally:
            await db.close()
        return size / count if count else 0.0

    return run_async(measure())


def count_webhooks(database_url: str, prefix: str) -> int:
    """Webhooks stored for sessions whose id starts with ``prefix``."""
    if database_url.startswith("sqlite:///"):
        db = sqlite3.connect(_sqlite_path(database_url), timeout=30)
        try:
            return db.execute(
                "SELECT count(*) FROM webhooks WHERE session_id >= ? AND session_id < ?",
                (prefix, prefix + "\U0010ffff"),
            ).fetchone()[0]
        finally:
            db.close()

    async def count() -> int:
        db = await asyncpg.connect(database_url)
        try:
            return await db.fetchval(
                "SELECT count(*) FROM webhooks WHERE starts_with(session_id, $1)", prefix
            )
        finally:
            await db.close()

    return run_async(count())
