"""Read what a store wrote, straight from its database, whichever the engine."""

from __future__ import annotations

from typing import Any

import aiosqlite
import asyncpg


async def query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    if database_url.startswith("sqlite:///"):
        async with aiosqlite.connect(database_url.removeprefix("sqlite:///")) as db:
            async with db.execute(sql) as cursor:
                return [tuple(row) for row in await cursor.fetchall()]
    db = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await db.fetch(sql)]
    finally:
        await db.close()
