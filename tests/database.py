"""Read what a store wrote, straight from its database, whichever the engine; open a store with
the settings' defaults; make a database as an older bridge left it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from typing import Any

import asyncpg

from app import store
from app.config import DB_POOL_MAX, DB_POOL_MIN, DB_TIMEOUT
from app.store.migrations import MIGRATIONS
from app.store.sql import numbered

# The versions each engine recorded before both shared one numbering, each as its shared number
# now: PostgreSQL never had version 3 (the changes table, SQLite's alone). Written out here, not
# taken from app.store.migrations, for the tests to check it; never to change.
OLD_NUMBERS = {"sqlite": tuple(range(1, 9)), "postgres": (1, 2, 4, 5, 6, 7, 8)}


async def query(database_url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of one statement; ``args`` fill its ``?`` placeholders, on either engine."""
    if database_url.startswith("sqlite:///"):
        path = database_url.removeprefix("sqlite:///")
        return await asyncio.to_thread(_sqlite_query, path, sql, args)
    db = await asyncpg.connect(database_url)
    try:
        return [tuple(row) for row in await db.fetch(numbered(sql) if args else sql, *args)]
    finally:
        await db.close()


def _sqlite_query(path: str, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = [tuple(row) for row in db.execute(sql, args).fetchall()]
        db.commit()  # a statement that writes
        return rows


def open_store(database_url: str) -> store.Store:
    """The store a bridge with the default settings opens (app/config.py's)."""
    return store.open_store(
        database_url, pool_min=DB_POOL_MIN, pool_max=DB_POOL_MAX, timeout=DB_TIMEOUT
    )


def engine(database_url: str) -> str:
    """``sqlite`` or ``postgres``: which script of a migration the database runs."""
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


def old_steps(name: str) -> list[str]:
    """The scripts of an engine's old versions, in their order: version n ran the n-th."""
    return [getattr(MIGRATIONS[number - 1], name) for number in OLD_NUMBERS[name]]


def old_version_before(database_url: str, number: int) -> int:
    """The last version the engine recorded, in its old numbering, before shared version
    ``number`` was made."""
    return OLD_NUMBERS[engine(database_url)].index(number)


async def at_old_version(database_url: str, version: int) -> None:
    """Make the empty database ``database_url`` what a bridge of before the shared numbering left
    at ``version`` of its engine's own: that many steps run and recorded, as they were then."""
    scripts = old_steps(engine(database_url))[:version]
    versions = [(number,) for number in range(1, version + 1)]
    record = "CREATE TABLE schema_version (version INTEGER NOT NULL)"
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url.removeprefix("sqlite:///"))) as db:
            for script in scripts:
                db.executescript(script)
            db.execute(record)
            db.executemany("INSERT INTO schema_version VALUES (?)", versions)
            db.commit()
        return
    db = await asyncpg.connect(database_url)
    try:
        for script in scripts:
            await db.execute(script)
        await db.execute(record)
        await db.executemany("INSERT INTO schema_version VALUES ($1)", versions)
    finally:
        await db.close()
