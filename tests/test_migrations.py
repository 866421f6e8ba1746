"""Every schema version a bridge ever recorded upgrades to the newest, on either engine: to the
schema a new database gets, each step run once and none skipped.

Both engines number their versions alike now; before, PostgreSQL numbered its own (it never had
SQLite's version 3), and the databases it left say so. :func:`tests.database.at_old_version`
makes a database as the bridge left it at each of those versions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.store import migrations

from .database import OLD_NUMBERS, at_old_version, old_steps, open_store, query
from .test_store import logged, store_undated

# SHA-256 of each engine's old steps (a JSON list of their scripts) as they shipped: the steps
# at_old_version runs are the ones the databases it stands for ran.
SHIPPED = {
    "sqlite": "de03e2f5a5619f80ad53253f402a58aa9d755a6ed196a69651f3822d2dbd65ac",
    "postgres": "a54c421220f728345679aa874afc5ed938a0cf44c5630532b801940b0d1f8228",
}


@pytest.fixture
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """A new, empty database of an engine (``sqlite`` or ``postgres``) each call."""
    files = itertools.count()

    def new(engine: str) -> str:
        if engine == "sqlite":
            return f"sqlite:///{tmp_path / f'bridge-{next(files)}.sqlite3'}"
        return str(request.getfixturevalue("postgres").new_database())

    return new


async def start_and_stop(database_url: str) -> None:
    store = open_store(database_url)
    await store.open()
    await store.close()


async def schema(database_url: str) -> list[tuple[Any, ...]]:
    """Every table, column, index and constraint of the database, as its engine describes it."""
    if database_url.startswith("sqlite"):
        return await query(
            database_url, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
        )
    columns = await query(
        database_url,
        "SELECT table_name, column_name, ordinal_position, data_type, is_nullable,"
        " column_default FROM information_schema.columns WHERE table_schema = current_schema()"
        " ORDER BY table_name, ordinal_position",
    )
    indexes = await query(
        database_url,
        "SELECT tablename, indexname, replace(indexdef, current_schema() || '.', '')"
        " FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname",
    )
    constraints = await query(
        database_url,
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = current_schema()::regnamespace ORDER BY conname",
    )
    return [*columns, *indexes, *constraints]


@pytest.mark.parametrize("engine", sorted(OLD_NUMBERS))
def test_the_old_steps_are_those_that_shipped(engine: str) -> None:
    steps = json.dumps(old_steps(engine)).encode()
    assert hashlib.sha256(steps).hexdigest() == SHIPPED[engine]


def test_both_engines_run_a_script_for_every_version_but_what_only_the_other_needs() -> None:
    """PostgreSQL has no changes table (3: it announces with NOTIFY), SQLite no webhook
    function (11: its single writer decides and writes in one transaction) and no function for
    the relay's outcomes (13: its writer runs a batch of them as one job), and no planner
    statistics to leave out (14: a delivery's state, for the relay's claim)."""
    empty = {
        engine: [
            number
            for number, migration in enumerate(migrations.MIGRATIONS, start=1)
            if not getattr(migration, engine).strip()
        ]
        for engine in OLD_NUMBERS
    }
    assert empty == {"sqlite": [11, 13, 14], "postgres": [3]}


@pytest.mark.parametrize(
    ("engine", "version"),
    [
        pytest.param(engine, version, id=f"{engine}-{version}")
        for engine, numbers in sorted(OLD_NUMBERS.items())
        for version in range(len(numbers) + 1)
    ],
)
async def test_a_database_at_any_old_version_upgrades_to_the_schema_of_a_new_one(
    engine: str, version: int, empty_database: Callable[[str], str]
) -> None:
    new, old = empty_database(engine), empty_database(engine)
    await start_and_stop(new)
    await at_old_version(old, version)
    if version:  # a session the step of the provider's clock dates, whenever it runs
        await store_undated(old, "ps_clock", "in_progress", [logged("ready_to_confirm", 1)])
    await start_and_stop(old)
    await start_and_stop(old)  # the second start finds nothing to do
    assert await schema(old) == await schema(new)
    # The versions recorded then, in the numbering both engines share now, and each one after.
    then = OLD_NUMBERS[engine][:version]
    after = range(then[-1] + 1 if then else 1, len(migrations.MIGRATIONS) + 1)
    recorded = await query(old, "SELECT version FROM schema_version ORDER BY version")
    assert recorded == [(number,) for number in (*then, *after)]
    if engine == "postgres":
        numberings = await query(new, "SELECT DISTINCT numbering FROM schema_version")
        assert numberings == await query(old, "SELECT DISTINCT numbering FROM schema_version")
    if version:
        [(clock,)] = await query(
            old, "SELECT provider_updated_at FROM sessions WHERE session_id = 'ps_clock'"
        )
        dated_then = migrations.DATED in then  # stored after its step ran: never dated since
        assert clock == (None if dated_then else 1799996400.0 + 60)
