"""Read what a store wrote, straight from its database, whichever the engine."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any

import asyncpg


async def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite:///"):
        return await asyncio.to_thread(_sqlite_query, database_url.removeprefix("sqlite:///"), sql)
    db = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await db.fetch(sql)]
    finally:
        await db.close()


def _sqlite_query(path: str, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = [tuple(row) for row in db.execute(sql).fetchall()]
        db.commit()  # a statement that writes
        return rows
