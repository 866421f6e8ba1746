"""One storage suite, run on every engine (``database_url`` is parametrized in conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.config import DB_TIMEOUT
from app.lifecycle import Session, Status, new_session
from app.store import (
    Attempt,
    Delivery,
    Event,
    Handoff,
    RelayJob,
    StorageUnavailableError,
    Store,
    migrations,
)
from app.store import sqlite as sqlite_engine
from app.store.sqlite import SQLiteStore

from .database import at_old_version, old_version_before, open_store, query
from .payloads import webhook


def delivery(body: bytes, session_id: str = "ps_1") -> Delivery:
    return Delivery(hashlib.sha256(body).digest(), body, session_id, "action_required", 10.0)


def moved(status: Status) -> Callable[[Session | None], Session]:
    def update(session: Session | None) -> Session:
        return Session(id="ps_1", status=status, created_at=1.0, updated_at=2.0)

    return update


async def test_schema_is_created_and_upgrades_are_idempotent(database_url: str) -> None:
    for _ in range(2):
        store = open_store(database_url)
        await store.open()
        await store.close()
    versions = await query(database_url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(number,) for number in range(1, len(migrations.MIGRATIONS) + 1)]


async def test_an_older_database_is_upgraded_in_place(database_url: str) -> None:
    # A database as version 1 left it, holding a session.
    await at_old_version(database_url, 1)
    await query(
        database_url,
        "INSERT INTO sessions VALUES ('ps_old', 'succeeded', NULL, NULL, NULL, NULL,"
        " NULL, '[]', 1.0, 2.0)",
    )
    store = open_store(database_url)
    await store.open()
    session = await store.get_session("ps_old")
    await store.close()
    assert session is not None and session.status is Status.SUCCEEDED
    versions = await query(database_url, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(number,) for number in range(1, len(migrations.MIGRATIONS) + 1)]


def logged(kind: str, minute: int | None, **fields: Any) -> bytes:
    body = webhook(kind, "ps_x", **fields)
    if minute is None:
        del body["session"]["updated_at"]
    else:
        body["session"]["updated_at"] = f"2027-01-15T07:{minute:02}:00Z"
    return json.dumps(body).encode()


async def store_undated(
    database_url: str, session_id: str, status: str, bodies: list[bytes]
) -> None:
    """A session as the versions before the provider's clock stored it, and the webhooks it
    logged."""
    await query(
        database_url,
        "INSERT INTO sessions (session_id, status, payments, created_at, updated_at)"
        " VALUES (?, ?, '[]', 1.0, 2.0)",
        (session_id, status),
    )
    for body in bodies:
        await query(
            database_url,
            "INSERT INTO webhooks (digest, session_id, type, received_at, body)"
            " VALUES (?, ?, 'x', 1.0, ?)",
            (hashlib.sha256(session_id.encode() + body).digest(), session_id, body),
        )


# Sessions as the version before the provider's clock left them, with the webhooks they logged.
UNDATED: dict[str, tuple[str, list[bytes]]] = {
    "ps_confirm": ("in_progress", [logged("ready_to_confirm", 1)]),
    "ps_held": (  # the old version called a hold in_progress
        "in_progress",
        [
            logged("ready_to_confirm", 1),
            logged("action_required", 2),
            logged("ready_to_capture", 3),
        ],
    ),
    "ps_bank": ("action_required", [logged("action_required", 2), logged("ready_to_confirm", 1)]),
    "ps_done": ("succeeded", [logged("payment_finished", 5, session_status="accepted")]),
    "ps_unknown": ("in_progress", [logged("ready_to_confirm", None), b"not json"]),
}


async def test_sessions_stored_before_the_providers_clock_are_dated(database_url: str) -> None:
    await at_old_version(database_url, old_version_before(database_url, migrations.DATED))
    for session_id, (status, bodies) in UNDATED.items():
        await store_undated(database_url, session_id, status, bodies)
    store = open_store(database_url)
    await store.open()
    sessions = {session_id: await store.get_session(session_id) for session_id in UNDATED}
    await store.close()
    minute = 1799996400.0  # 2027-01-15T07:00:00Z
    dated = {
        session_id: (session.status.value, session.provider_updated_at, session.next_action)
        for session_id, session in sessions.items()
        if session is not None
    }
    assert dated == {
        "ps_confirm": ("in_progress", minute + 60, "confirm"),
        "ps_held": ("authorized", minute + 180, "capture"),
        "ps_bank": ("action_required", minute + 120, None),
        "ps_done": ("succeeded", None, None),  # a final status needs no clock
        "ps_unknown": ("in_progress", None, None),
    }


async def test_what_was_committed_survives_a_reopen(database_url: str) -> None:
    store = open_store(database_url)
    await store.open()
    changed = await store.record_webhook(delivery(b"one"), moved(Status.ACTION_REQUIRED))
    assert changed.before is None and changed.after is not None and not changed.duplicate
    await store.close()
    store = open_store(database_url)
    await store.open()
    session = await store.get_session("ps_1")
    again = await store.record_webhook(delivery(b"one"), moved(Status.SUCCEEDED))
    await store.close()
    assert session is not None and session.status is Status.ACTION_REQUIRED
    assert again.duplicate and again.after == session


async def test_an_update_that_raises_writes_nothing(store: Store) -> None:
    def broken(session: Session | None) -> Session:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.record_webhook(delivery(b"two"), broken)
    # The delivery was rolled back with the session: it can be delivered again.
    retried = await store.record_webhook(delivery(b"two"), moved(Status.ACTION_REQUIRED))
    assert not retried.duplicate


async def test_sessions_due_lists_only_expired_actions(store: Store) -> None:
    for session_id, expires in (("ps_a", 100.0), ("ps_b", 200.0)):
        session = Session(
            id=session_id,
            status=Status.ACTION_REQUIRED,
            created_at=1.0,
            updated_at=1.0,
            action_received_at=1.0,
            action_expires_at=expires,
        )
        await store.update_session(session_id, lambda _, s=session: s)
    await store.update_session("ps_c", lambda _: new_session("ps_c", 1.0))
    assert await store.sessions_due(150.0) == ["ps_a"]
    assert await store.sessions_due(200.0) == ["ps_a", "ps_b"]


async def test_changes_wake_watchers_only_when_something_changed(store: Store) -> None:
    with store.changes.watch("ps_1") as changed:
        await store.update_session("ps_1", lambda session: session)  # nothing to write
        assert not changed.done()
        await store.update_session("ps_1", moved(Status.PENDING))
        await asyncio.wait_for(changed, timeout=1)
    assert store.changes.waiting == 0


async def test_a_cancelled_writer_still_commits_and_wakes_its_watchers(store: Store) -> None:
    with store.changes.watch("ps_1") as changed:
        writer = asyncio.create_task(
            store.record_webhook(delivery(b"hung up"), moved(Status.ACTION_REQUIRED))
        )
        await asyncio.sleep(0)  # the write has started
        writer.cancel()
        await asyncio.wait_for(changed, timeout=2)
    session = await store.get_session("ps_1")
    assert session is not None and session.status is Status.ACTION_REQUIRED


async def test_concurrent_deliveries_of_the_same_webhook_are_one(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.record_webhook(delivery(b"storm"), moved(Status.ACTION_REQUIRED))
            for _ in range(20)
        )
    )
    assert sum(not result.duplicate for result in results) == 1


async def test_concurrent_deliveries_of_a_webhook_that_changes_nothing_are_one(
    store: Store,
) -> None:
    results = await asyncio.gather(
        *(store.record_webhook(delivery(b"no news"), lambda session: session) for _ in range(20))
    )
    assert sum(not result.duplicate for result in results) == 1
    assert len(await store.events("ps_1")) == 20


def counted(mark: str) -> Callable[[Session | None], Session]:
    """An update that adds ``mark`` to what the session has counted: one lost shows."""

    def update(session: Session | None) -> Session:
        marks = session.payments if session is not None else ()
        return Session("ps_1", Status.IN_PROGRESS, 1.0, 2.0, payments=(*marks, {"mark": mark}))

    return update


async def test_concurrent_writes_to_one_session_each_see_the_one_before(store: Store) -> None:
    """Webhooks and other updates of one session all at once: each decision is made from the
    session as the write before it left it, so none is lost and none decided twice."""
    writes = [
        store.record_webhook(delivery(f"webhook {n}".encode()), counted(f"w{n}")) for n in range(20)
    ]
    writes += [store.update_session("ps_1", counted(f"u{n}")) for n in range(10)]
    changes = await asyncio.gather(*writes)
    session = await store.get_session("ps_1")
    assert session is not None
    assert sorted(mark["mark"] for mark in session.payments) == sorted(
        [f"w{n}" for n in range(20)] + [f"u{n}" for n in range(10)]
    )
    seen = sorted(len(change.before.payments) if change.before else 0 for change in changes)
    assert seen == list(range(30))
    assert [event.kind for event in await store.events("ps_1")] == ["webhook"] * 20


async def test_copies_of_one_webhook_serialised_anew_change_a_session_once_all_at_once(
    store: Store,
) -> None:
    copies = [replace(delivery(f"copy {n}".encode()), meaning=b"one meaning") for n in range(12)]
    changes = await asyncio.gather(
        *(store.record_webhook(copy, counted(f"c{n}")) for n, copy in enumerate(copies))
    )
    assert sum(change.after != change.before for change in changes) == 1
    assert not any(change.duplicate for change in changes)
    session = await store.get_session("ps_1")
    assert session is not None and len(session.payments) == 1
    assert len(await store.events("ps_1")) == 12


async def test_a_counted_event_is_added_up_to_its_bound_even_all_at_once(store: Store) -> None:
    """The session's history holds at most ``most`` events of a kind, however many come at
    the same time; other kinds and other sessions' do not count."""
    await store.add_event(Event("ps_1", 1.0, "page", {"step": "bank"}))
    report = Event("ps_1", 2.0, "browser", {"event": "bank", "mode": "page"})
    added = await asyncio.gather(*(store.add_counted_event(report, 5) for _ in range(12)))
    assert sorted(added) == [False] * 7 + [True] * 5
    assert [event.kind for event in await store.events("ps_1")] == ["page"] + ["browser"] * 5
    assert await store.add_counted_event(Event("ps_2", 3.0, "browser", {}), 5)


async def test_sqlite_commits_are_synchronous_full_in_wal(tmp_path: Path) -> None:
    store = sqlite_engine.SQLiteStore(
        str(tmp_path / "nested" / "bridge.sqlite3"), timeout=DB_TIMEOUT
    )
    await store.open()
    writer = store._write()
    level = await store._in_writer(lambda: writer.execute("PRAGMA synchronous").fetchone())
    journal = await store._in_writer(lambda: writer.execute("PRAGMA journal_mode").fetchone())
    await store.close()
    assert level == (2,)  # FULL: the WAL is synced on every commit
    assert journal == ("wal",)


def batches_of(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many writes each transaction of ``store`` commits from now on (it is open). Any
    other store of the process commits through the same function: its batches are not
    counted."""
    batches: list[int] = []
    commit = sqlite_engine._commit

    def counted(db: sqlite3.Connection, turn: int | None, jobs: list[Any]) -> list[Any]:
        if db is store._writer:
            batches.append(len(jobs))
        return commit(db, turn, jobs)

    monkeypatch.setattr(sqlite_engine, "_commit", counted)
    return batches


async def test_sqlite_commits_concurrent_writes_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = sqlite_engine.SQLiteStore(str(tmp_path / "bridge.sqlite3"), timeout=DB_TIMEOUT)
    # Another store of the process commits meanwhile (a bridge serving in a thread, its
    # sweeper or its housekeeping): its commits are not this store's batches.
    other = sqlite_engine.SQLiteStore(str(tmp_path / "other.sqlite3"), timeout=DB_TIMEOUT)
    await store.open()
    await other.open()
    batches = batches_of(store, monkeypatch)
    results, _ = await asyncio.gather(
        asyncio.gather(
            *(
                store.record_webhook(delivery(b"%d" % n, f"ps_{n}"), moved(Status.PENDING))
                for n in range(50)
            )
        ),
        other.add_event(Event("ps_other", 1.0, "page", {})),
    )
    await store.close()
    await other.close()
    assert all(not result.duplicate for result in results)
    assert sum(batches) == 50
    assert max(batches) > 1  # one fsync made many webhooks durable


async def test_one_failing_write_in_a_batch_fails_alone(store: Store) -> None:
    def broken(session: Session | None) -> Session:
        raise RuntimeError("boom")

    good, bad, also_good = await asyncio.gather(
        store.record_webhook(delivery(b"a", "ps_a"), moved(Status.PENDING)),
        store.record_webhook(delivery(b"b", "ps_b"), broken),
        store.record_webhook(delivery(b"c", "ps_c"), moved(Status.PENDING)),
        return_exceptions=True,
    )
    assert isinstance(bad, RuntimeError)
    assert not isinstance(good, BaseException) and not isinstance(also_good, BaseException)
    retried = await store.record_webhook(delivery(b"b", "ps_b"), moved(Status.PENDING))
    assert not retried.duplicate  # the failed delivery left nothing behind


async def test_postgres_listeners_come_back_after_their_connections_are_killed(
    request: pytest.FixtureRequest,
) -> None:
    url = request.getfixturevalue("postgres").new_database()
    here, there = open_store(url), open_store(url)
    await here.open()
    await there.open()
    listening = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
    try:
        before = (await query(url, listening))[0][0]
        await query(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'",
        )
        for _ in range(100):  # both listeners reconnect by themselves
            await asyncio.sleep(0.1)
            if (await query(url, listening))[0][0] >= before:
                break
        with here.changes.watch("ps_1") as changed:
            await there.update_session("ps_1", moved(Status.ACTION_REQUIRED))
            await asyncio.wait_for(changed, timeout=3)
    finally:
        await here.close()
        await there.close()


async def test_closing_a_postgres_store_ends_a_look_at_other_instances_changes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``caught_up`` asks on the listening connection; should the store close while that
    question is out, the look ends with it (no task left running), and its callers hear
    that nothing could be known."""
    url = request.getfixturevalue("postgres").new_database()
    store = open_store(url)
    await store.open()
    asked = asyncio.Event()
    fetchval = asyncpg.Connection.fetchval

    async def never_answered(db: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if db is getattr(store, "_listener", None):
            asked.set()
            await asyncio.Event().wait()
        return await fetchval(db, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetchval", never_answered)
    looking = asyncio.create_task(store.caught_up())
    await asyncio.wait_for(asked.wait(), timeout=5)
    async with asyncio.timeout(10):
        await store.close()
    assert await asyncio.wait_for(looking, timeout=5) is False
    assert [task for task in asyncio.all_tasks() if task.get_name() == "postgres barriers"] == []


async def test_postgres_connections_go_back_to_the_pool_with_nothing_held(
    request: pytest.FixtureRequest,
) -> None:
    """The pool gives connections back without a reset query, which is sound only while no
    write leaves session state behind: a session-level lock or an open transaction (a failed
    write too) would fail this."""
    url = request.getfixturevalue("postgres").new_database()
    store = open_store(url)
    await store.open()

    def fails(session: Session | None) -> Session:
        raise RuntimeError("the update refuses")

    try:
        writes = [store.update_session("ps_1", moved(Status.ACTION_REQUIRED)) for _ in range(10)]
        writes += [store.update_session("ps_1", fails) for _ in range(5)]
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        assert sum(isinstance(outcome, RuntimeError) for outcome in outcomes) == 5
        locks = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        assert await query(url, locks) == [(0,)]
        open_transactions = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
        )
        assert await query(url, open_transactions) == [(0,)]
        assert (await store.get_session("ps_1")) is not None
    finally:
        await store.close()


class Busy:
    """A connection that always says busy, as SQLite's does during a recovery."""

    def __init__(self, real: sqlite3.Connection | None) -> None:
        assert real is not None
        self.real = real

    def execute(self, *args: Any) -> Any:
        raise sqlite3.OperationalError("database is locked")

    def close(self) -> None:
        self.real.close()


READS: dict[str, Callable[[Store], Any]] = {
    "get_session": lambda store: store.get_session("ps_1"),
    "events": lambda store: store.events("ps_1"),
    "deliveries": lambda store: store.deliveries("pending", 10),
    "relay_backlog": lambda store: store.relay_backlog(),
    "sessions_due": lambda store: store.sessions_due(100.0),
    "ping": lambda store: store.ping(),
}


async def sqlite_store(path: Path) -> SQLiteStore:
    store = SQLiteStore(str(path), timeout=DB_TIMEOUT)
    await store.open()
    await store.update_session("ps_1", moved(Status.ACTION_REQUIRED), event_at(1.0))
    return store


def event_at(at: float) -> Event:
    return Event("ps_1", at, "page", {"n": at})


@pytest.mark.parametrize("read", READS)
async def test_a_busy_sqlite_read_is_asked_again_on_the_connection_that_waits(
    tmp_path: Path, read: str
) -> None:
    store = await sqlite_store(tmp_path / "busy.sqlite3")
    try:
        expected = await READS[read](store)
        store._reader = Busy(store._reader)  # type: ignore[assignment]
        assert await READS[read](store) == expected
    finally:
        await store.close()


async def test_a_busy_sqlite_read_the_writer_cannot_answer_either_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await sqlite_store(tmp_path / "busy.sqlite3")
    connect = sqlite3.connect
    try:
        store._reader = Busy(store._reader)  # type: ignore[assignment]
        store._writer = Busy(store._writer)  # type: ignore[assignment]
        # The backlog is counted on a connection of its own, which says busy too.
        monkeypatch.setattr(sqlite3, "connect", lambda *args, **kw: Busy(connect(*args, **kw)))
        for read in READS.values():
            with pytest.raises(StorageUnavailableError):
                await read(store)
    finally:
        await store.close()


async def test_sqlite_reads_answer_at_once_while_another_process_holds_the_write_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.sqlite3"
    store = await sqlite_store(path)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process writes, or is stuck mid-write
        blocker.execute("INSERT INTO changes (session_id) VALUES ('ps_other')")
        # This write now waits in the writer's thread; reads are not queued behind it.
        write = asyncio.create_task(store.update_session("ps_2", moved(Status.PENDING)))
        await asyncio.sleep(0.05)
        for read in READS.values():
            await asyncio.wait_for(read(store), timeout=0.5)
        session = await store.get_session("ps_1")
        assert session is not None and session.status is Status.ACTION_REQUIRED
        assert [event.at for event in await store.events("ps_1")] == [1.0]
        assert not write.done()
        blocker.execute("COMMIT")
        await asyncio.wait_for(write, timeout=5)
    finally:
        blocker.close()
        await store.close()


async def test_sqlite_reads_answer_through_checkpoints_and_other_writers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "checkpoints.sqlite3"
    store = await sqlite_store(path)
    stop = threading.Event()

    def write_and_checkpoint() -> int:
        rounds = 0
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("PRAGMA busy_timeout = 5000")
            while not stop.is_set():
                other.execute("INSERT INTO changes (session_id) VALUES ('ps_other')")
                other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                rounds += 1
        return rounds

    other = asyncio.get_running_loop().run_in_executor(None, write_and_checkpoint)
    try:
        for _ in range(2000):
            session = await store.get_session("ps_1")
            assert session is not None and session.status is Status.ACTION_REQUIRED
            assert len(await store.events("ps_1")) == 1
    finally:
        stop.set()
        rounds = await other
        await store.close()
    assert rounds > 0


async def test_one_failing_job_is_rolled_back_alone_and_its_batch_committed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "batch.sqlite3"
    store = SQLiteStore(str(path), timeout=DB_TIMEOUT)
    await store.open()

    def broken(session: Session | None) -> Session:
        raise RuntimeError("boom")

    def bad_statement(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO events (session_id) VALUES ('ps_x')")  # NOT NULL: refused

    batches = batches_of(store, monkeypatch)
    with store.changes.watch("ps_b") as woken:
        outcomes = await asyncio.gather(
            store.record_webhook(delivery(b"a", "ps_a"), lambda _: new_session("ps_a", 1.0)),
            store.record_webhook(delivery(b"b", "ps_b"), broken),
            store._transaction("", bad_statement),
            store.record_webhook(delivery(b"c", "ps_c"), lambda _: new_session("ps_c", 1.0)),
            return_exceptions=True,
        )
        assert not woken.done()  # nothing of ps_b was announced
    await store.close()
    assert batches == [4]  # one transaction
    assert isinstance(outcomes[1], RuntimeError)
    assert isinstance(outcomes[2], sqlite3.Error | StorageUnavailableError)
    reopened = SQLiteStore(str(path), timeout=DB_TIMEOUT)
    await reopened.open()
    try:
        assert (await reopened.get_session("ps_a")) is not None
        assert (await reopened.get_session("ps_c")) is not None
        assert (await reopened.get_session("ps_b")) is None
        assert await reopened.events("ps_x") == []
        retried = await reopened.record_webhook(
            delivery(b"b", "ps_b"), lambda _: new_session("ps_b", 1.0)
        )
        assert not retried.duplicate
    finally:
        await reopened.close()


async def test_caught_up_publishes_what_another_connection_committed_before_the_call(
    tmp_path: Path,
) -> None:
    path = tmp_path / "caught.sqlite3"
    here, there = (
        SQLiteStore(str(path), timeout=DB_TIMEOUT),
        SQLiteStore(str(path), timeout=DB_TIMEOUT),
    )
    await here.open()
    await there.open()
    heard: list[str | None] = []
    here.changes.subscribe(heard.append)
    try:
        assert await here.caught_up()
        await there.update_session("ps_there", moved(Status.PENDING))
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as raw:
            raw.execute("INSERT INTO changes (session_id) VALUES ('ps_raw')")
        with here.changes.watch("ps_raw") as raw_noticed:
            assert await here.caught_up()  # no wait, no poll: published before it returns
            assert raw_noticed.done()
        assert "ps_there" in heard and "ps_raw" in heard
        heard.clear()
        assert await here.caught_up()
        assert heard == []  # nothing committed since: nothing published again
    finally:
        await there.close()
        await here.close()
    assert not await here.caught_up()  # closed: it cannot know


TWO_PROCESSES = """
import asyncio, json, sys
from app.config import DB_TIMEOUT
from app.lifecycle import Session, Status
from app.store.sqlite import SQLiteStore

async def main(path, mine, theirs, count):
    store = SQLiteStore(path, timeout=DB_TIMEOUT)
    await store.open()
    heard = set()
    store.changes.subscribe(heard.add)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    def update(session_id):
        return lambda _: Session(id=session_id, status=Status.PENDING, created_at=1.0,
                                 updated_at=2.0)
    await asyncio.gather(*(store.update_session(f"{mine}_{n}", update(f"{mine}_{n}"))
                           for n in range(count)))
    expected = {f"{theirs}_{n}" for n in range(count)}
    for _ in range(200):
        if expected <= heard:
            break
        await asyncio.sleep(0.05)
    await store.close()
    print(json.dumps(len(expected & heard)), flush=True)

asyncio.run(main(*sys.argv[1:4], int(sys.argv[4])))
"""


async def test_two_processes_writing_one_sqlite_file_hear_each_other_and_both_last(
    tmp_path: Path,
) -> None:
    path, count = str(tmp_path / "shared.sqlite3"), 300
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            TWO_PROCESSES,
            path,
            mine,
            theirs,
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for mine, theirs in (("ps_a", "ps_b"), ("ps_b", "ps_a"))
    ]
    for child in children:
        assert child.stdout is not None
        assert await asyncio.wait_for(child.stdout.readline(), timeout=30) == b"ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
    heard = [
        int((await asyncio.wait_for(child.communicate(), timeout=30))[0]) for child in children
    ]
    assert [child.returncode for child in children] == [0, 0]
    assert heard == [count, count]  # each heard every change of the other
    store = open_store(f"sqlite:///{path}")
    await store.open()
    try:
        for prefix in ("ps_a", "ps_b"):
            for n in range(count):
                assert await store.get_session(f"{prefix}_{n}") is not None
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


async def test_reading_from_a_closed_store_is_unavailable_not_an_error(database_url: str) -> None:
    store = open_store(database_url)
    await store.open()
    await store.update_session("ps_1", moved(Status.ACTION_REQUIRED))
    await store.close()
    with pytest.raises(StorageUnavailableError):
        await store.get_session("ps_1")


def relayed(body: bytes, session_id: str, at: float) -> Delivery:
    return Delivery(
        hashlib.sha256(body).digest(),
        body,
        session_id,
        "ready_to_confirm",
        at,
        relay_signature="signed",
    )


def pending(session_id: str) -> Callable[[Session | None], Session]:
    return lambda session: session or new_session(session_id, 1.0)


async def test_no_row_id_is_used_twice_after_retention(store: Store, database_url: str) -> None:
    """Retention deletes the newest rows of a quiet period too; the ids after it are new, so
    nothing that still names an old id (a partner's "already handled", a history entry) can
    meet another row under it."""
    for number in range(3):
        body = f'{{"n": {number}}}'.encode()
        await store.record_webhook(relayed(body, f"ps_{number}", 10.0), pending(f"ps_{number}"))
    jobs = await store.claim_deliveries(20.0, 30.0, 10)
    await store.finish_attempts([Attempt(job, 21.0, 200, "delivered", 21.0) for job in jobs])
    tables = ("webhooks", "deliveries")
    newest = {table: await query(database_url, f"SELECT max(id) FROM {table}") for table in tables}
    assert await store.forget(1_000.0, 100, 1_000.0) > 0
    for table in tables:
        assert await query(database_url, f"SELECT count(*) FROM {table}") == [(0,)]
    await store.record_webhook(relayed(b'{"n": 9}', "ps_9", 2_000.0), pending("ps_9"))
    for table in tables:
        [(new,)] = await query(database_url, f"SELECT id FROM {table}")
        assert new > newest[table][0][0], table


async def test_a_delivery_whose_body_is_gone_fails_alone(store: Store, database_url: str) -> None:
    """A delivery whose webhook row is missing (deleted by hand, a partial restore) is failed
    and kept; every other session's deliveries still go, each with its own body."""
    for number in range(3):
        body = f'{{"n": {number}}}'.encode()
        await store.record_webhook(relayed(body, f"ps_{number}", 10.0), pending(f"ps_{number}"))
    await query(database_url, "DELETE FROM webhooks WHERE session_id = 'ps_1'")
    jobs = await store.claim_deliveries(20.0, 30.0, 10)
    assert sorted((job.session_id, job.body) for job in jobs) == [
        ("ps_0", b'{"n": 0}'),
        ("ps_2", b'{"n": 2}'),
    ]
    failed = await store.deliveries("failed", 10)
    assert [(record.session_id, record.state) for record in failed] == [("ps_1", "failed")]
    assert await store.claim_deliveries(25.0, 50.0, 10) == []  # the claims above still hold


async def test_sqlite_ids_after_the_upgrade_start_past_every_id_the_history_names(
    tmp_path: Path,
) -> None:
    """A database from before ids were never reused: retention had deleted deliveries the
    kept history (and the partner) still name; the upgrade counts on past all of them."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    await at_old_version(url, 6)
    await query(
        url,
        "INSERT INTO events (session_id, at, kind, detail) VALUES"
        " ('ps_1', 1.0, 'relay', '{\"delivery_id\": 9, \"attempt\": 1}')",
    )
    store = open_store(url)
    await store.open()
    try:
        await store.record_webhook(relayed(b'{"n": 1}', "ps_1", 10.0), pending("ps_1"))
        [job] = await store.claim_deliveries(20.0, 30.0, 10)
    finally:
        await store.close()
    assert job.id > 9


async def test_a_sqlite_upgrade_another_process_runs_is_waited_for(tmp_path: Path) -> None:
    """A worker that starts while another rewrites the tables (the upgrade copies every body,
    which takes its time on a large file) waits its turn, however long, rather than failing
    after BRIDGE_DB_TIMEOUT with 'database is locked'."""
    path = tmp_path / "bridge.sqlite3"
    first = open_store(f"sqlite:///{path}")
    await first.open()
    await first.close()
    migrating = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    turn = os.open(f"{path}-writers.lock", os.O_RDWR)
    fcntl.flock(turn, fcntl.LOCK_EX)  # as a migrating process holds it
    migrating.execute("BEGIN IMMEDIATE")

    def finish() -> None:
        migrating.execute("COMMIT")
        fcntl.flock(turn, fcntl.LOCK_UN)

    threading.Timer(1.0, finish).start()
    second = SQLiteStore(str(path), timeout=0.3)
    try:
        await second.open()
    finally:
        await second.close()
        os.close(turn)
        migrating.close()


async def test_a_delivery_never_borrows_another_sessions_body(
    store: Store, database_url: str
) -> None:
    """A delivery whose webhook id names another session's webhook (ids handed out again, a
    partial restore) is failed, never sent with that body."""
    for number in range(2):
        body = f'{{"n": {number}}}'.encode()
        await store.record_webhook(relayed(body, f"ps_{number}", 10.0), pending(f"ps_{number}"))
    await query(
        database_url,
        "UPDATE deliveries SET webhook_id = (SELECT id FROM webhooks WHERE session_id = 'ps_0')"
        " WHERE session_id = 'ps_1'",
    )
    jobs = await store.claim_deliveries(20.0, 30.0, 10)
    assert [(job.session_id, job.body) for job in jobs] == [("ps_0", b'{"n": 0}')]
    failed = await store.deliveries("failed", 10)
    assert [record.session_id for record in failed] == ["ps_1"]


async def test_a_delivery_from_before_message_ids_keeps_the_id_it_was_sent_with(
    database_url: str,
) -> None:
    """A delivery whose attempts went out as X-Bridge-Delivery-Id 38 before the upgrade is 38
    after it: the partner deduplicates by it and may hold it to retry."""
    message_ids = next(
        number
        for number, migration in enumerate(migrations.MIGRATIONS, start=1)
        if "message_id" in migration.sqlite
    )
    await at_old_version(database_url, old_version_before(database_url, message_ids))
    await query(
        database_url,
        "INSERT INTO webhooks (id, digest, session_id, type, received_at, body)"
        " VALUES (7, ?, 'ps_1', 'ready_to_confirm', 10.0, ?)",
        (b"\x01", b"{}"),
    )
    await query(
        database_url,
        "INSERT INTO deliveries (id, webhook_id, session_id, type, received_at, signature, state,"
        " attempts, next_attempt_at, retry_from) VALUES (38, 7, 'ps_1', 'ready_to_confirm', 10.0,"
        " 'signed', 'pending', 2, 10.0, 10.0)",
    )
    store = open_store(database_url)
    await store.open()
    try:
        [job] = await store.claim_deliveries(20.0, 30.0, 10)
        [record] = await store.deliveries("pending", 10)
    finally:
        await store.close()
    assert (job.message_id, job.attempts, job.body) == ("38", 2, b"{}")
    assert record.id == "38"


async def test_an_event_is_due_when_the_change_was_recorded(
    store: Store, database_url: str
) -> None:
    """A timeout the sweep records late is dated, for the relay, when it was recorded (its body
    says when the window ended): a backlog gauge and the relay's maximum age count from then."""
    from app import events

    store.emit = events.emitted
    await store.update_session("ps_1", lambda session: new_session("ps_1", 10.0))
    ended = Session(
        id="ps_1",
        status=Status.CANCELED,
        reason="action_timeout",
        created_at=10.0,
        updated_at=100.0,
    )
    await store.update_session("ps_1", lambda session: ended, Event("ps_1", 900.0, "timeout", {}))
    rows = await query(
        database_url, "SELECT received_at, next_attempt_at, retry_from FROM deliveries"
    )
    assert rows == [(900.0, 900.0, 900.0)]


async def first_of_two_failed(store: Store) -> RelayJob:
    """Two deliveries of ``ps_1``, received at 10 and 11; the first claimed at 20 and failed
    for good at 21: its job."""
    for number in range(2):
        body = f'{{"n": {number}}}'.encode()
        await store.record_webhook(relayed(body, "ps_1", 10.0 + number), pending("ps_1"))
    [first] = await store.claim_deliveries(20.0, 30.0, 10)
    assert await store.finish_attempts([Attempt(first, 21.0, 500, "failed", 21.0)]) == [True]
    return first


async def test_a_delivery_put_back_waits_for_its_sessions_one_in_flight(store: Store) -> None:
    """The session's first delivery failed and the second is at the partner when the first is
    put back in line: the first waits until that attempt is over, never two at once."""
    first = await first_of_two_failed(store)
    [second] = await store.claim_deliveries(22.0, 40.0, 10)
    assert second.body == b'{"n": 1}'
    assert await store.retry_delivery(first.message_id, 23.0)
    assert await store.claim_deliveries(24.0, 50.0, 10) == []  # the second is still out
    assert await store.finish_attempts([Attempt(second, 25.0, 200, "delivered", 25.0)]) == [True]
    [again] = await store.claim_deliveries(26.0, 60.0, 10)
    assert again.message_id == first.message_id


async def test_deliveries_behind_one_put_off_are_not_due_before_it(
    store: Store, database_url: str
) -> None:
    """A session's deliveries wait behind its oldest pending one: put off to a later attempt,
    it puts off those behind it as far, and one recorded meanwhile is due no sooner, so a claim
    walking the due deliveries reads none of them before then; then they go in order."""
    for number in range(3):
        body = f'{{"n": {number}}}'.encode()
        await store.record_webhook(relayed(body, "ps_1", 10.0), pending("ps_1"))
    await store.record_webhook(relayed(b"other", "ps_2", 10.0), pending("ps_2"))
    first, other = await store.claim_deliveries(20.0, 30.0, 10)
    assert (first.body, other.body) == (b'{"n": 0}', b"other")
    assert await store.finish_attempts([Attempt(first, 21.0, 500, "pending", 100.0)]) == [True]
    assert await store.finish_attempts([Attempt(other, 21.0, 500, "pending", 40.0)]) == [True]
    await store.record_webhook(relayed(b'{"n": 3}', "ps_1", 50.0), pending("ps_1"))
    due = "SELECT next_attempt_at FROM deliveries WHERE session_id = 'ps_1' ORDER BY id"
    assert await query(database_url, due) == [(100.0,)] * 4
    [again] = await store.claim_deliveries(99.0, 200.0, 10)  # the other session's, due at 40
    assert again.body == b"other"
    [again] = await store.claim_deliveries(100.0, 130.0, 10)
    assert again.message_id == first.message_id
    assert await store.finish_attempts([Attempt(again, 101.0, 200, "delivered", 101.0)]) == [True]
    sent = []
    for at in range(102, 106):
        jobs = await store.claim_deliveries(float(at), at + 0.5, 10)
        sent += [job.body for job in jobs]
        outcomes = [Attempt(job, at + 0.1, 200, "delivered", at) for job in jobs]
        assert await store.finish_attempts(outcomes) == [True] * len(jobs)
    assert sent == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']


@pytest.mark.parametrize("put_back", ["one", "of its session", "every one"])
async def test_a_delivery_put_back_behind_one_waiting_for_a_retry_is_not_due_before_it(
    store: Store, database_url: str, put_back: str
) -> None:
    """Put back in line behind an earlier pending delivery of its session that waits for a
    later attempt, a delivery is due no sooner than that one (as one recorded then would be),
    so a claim walking the due deliveries reads none of them before then."""
    first = await first_of_two_failed(store)
    [second] = await store.claim_deliveries(22.0, 40.0, 10)
    assert await store.finish_attempts([Attempt(second, 23.0, 500, "failed", 23.0)]) == [True]
    assert await store.retry_delivery(first.message_id, 24.0)
    [again] = await store.claim_deliveries(25.0, 50.0, 10)
    assert again.id == first.id
    assert await store.finish_attempts([Attempt(again, 26.0, 500, "pending", 100.0)]) == [True]
    if put_back == "one":
        assert await store.retry_delivery(second.message_id, 30.0)
    else:
        session_id = "ps_1" if put_back == "of its session" else None
        assert await store.retry_failed(30.0, session_id) == 1
    due = "SELECT state, next_attempt_at, retry_from FROM deliveries ORDER BY id"
    assert await query(database_url, due) == [("pending", 100.0, 24.0), ("pending", 100.0, 30.0)]


async def write_transactions(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], Awaitable[int]]:
    """How many write transactions the store has begun since this call, when the returned
    function is called: on SQLite the jobs its writer committed (each a savepoint of a group
    commit), on PostgreSQL the transaction ids handed out (each read of them takes one)."""
    if database_url.startswith("sqlite:///"):
        jobs: list[int] = []
        commit = sqlite_engine._commit

        def counted(db: sqlite3.Connection, turn: int | None, batch: list[Any]) -> list[Any]:
            jobs.append(len(batch))
            return commit(db, turn, batch)

        monkeypatch.setattr(sqlite_engine, "_commit", counted)

        async def committed() -> int:
            return sum(jobs)

        return committed
    [(first,)] = await query(database_url, "SELECT txid_current()")

    async def begun() -> int:
        [(now,)] = await query(database_url, "SELECT txid_current()")
        return int(now - first - 1)

    return begun


async def test_attempts_finished_together_are_written_in_one_transaction(
    store: Store, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each outcome as one attempt alone would leave it (its delivery's state, the session's
    later deliveries put off with it, its history event), all in one write."""
    for number in range(4):
        body = f'{{"n": {number}}}'.encode()
        await store.record_webhook(relayed(body, f"ps_{number}", 10.0), pending(f"ps_{number}"))
    await store.record_webhook(relayed(b"behind", "ps_1", 11.0), pending("ps_1"))
    jobs = sorted(await store.claim_deliveries(20.0, 30.0, 10), key=lambda job: job.id)
    assert [job.session_id for job in jobs] == ["ps_0", "ps_1", "ps_2", "ps_3"]
    outcomes = [
        Attempt(jobs[0], 21.0, 200, "delivered", 21.0),
        Attempt(jobs[1], 21.5, 500, "pending", 100.0),
        Attempt(jobs[2], 22.0, 410, "failed", 22.0),
        Attempt(jobs[3], 22.5, None, "pending", 40.0),
    ]
    transactions = await write_transactions(database_url, monkeypatch)
    assert await store.finish_attempts(outcomes) == [True] * 4
    assert await transactions() == 1
    rows = await query(
        database_url,
        "SELECT session_id, state, attempts, last_attempt_at, last_status, next_attempt_at,"
        " claimed_until FROM deliveries ORDER BY id",
    )
    assert rows == [
        ("ps_0", "delivered", 1, 21.0, 200, 21.0, None),
        ("ps_1", "pending", 1, 21.5, 500, 100.0, None),
        ("ps_2", "failed", 1, 22.0, 410, 22.0, None),
        ("ps_3", "pending", 1, 22.5, None, 40.0, None),
        ("ps_1", "pending", 0, None, None, 100.0, None),  # put off with the one before it
    ]
    for attempt in outcomes:
        (event,) = [e for e in await store.events(attempt.job.session_id) if e.kind == "relay"]
        assert event.at == attempt.at
        assert event.detail == {
            "delivery_id": attempt.job.message_id,
            "type": "ready_to_confirm",
            "attempt": 1,
            "http_status": attempt.http_status,
            "state": attempt.state,
        }
    assert await store.finish_attempts([]) == []


async def test_a_lapsed_claim_in_a_batch_answers_false_for_that_attempt_alone(
    store: Store, database_url: str
) -> None:
    """One delivery's claim lapsed and another process took it meanwhile: that outcome is not
    written (the other process's attempt is the one on record), and the batch's others are."""
    for number in range(3):
        body = f'{{"n": {number}}}'.encode()
        await store.record_webhook(relayed(body, f"ps_{number}", 10.0), pending(f"ps_{number}"))
    first, second, third = sorted(
        await store.claim_deliveries(20.0, 30.0, 10), key=lambda job: job.id
    )
    await query(
        database_url, "UPDATE deliveries SET claimed_until = 25.0 WHERE id = ?", (second.id,)
    )
    [taken] = await store.claim_deliveries(26.0, 60.0, 10)  # another process's, once lapsed
    assert taken.id == second.id
    recorded = await store.finish_attempts(
        [Attempt(job, 31.0, 200, "delivered", 31.0) for job in (first, second, third)]
    )
    assert recorded == [True, False, True]
    rows = await query(
        database_url, "SELECT state, attempts, claimed_until FROM deliveries ORDER BY id"
    )
    assert rows == [("delivered", 1, None), ("pending", 0, 60.0), ("delivered", 1, None)]
    assert [e.kind for e in await store.events("ps_1")] == ["webhook"]
    assert [e.kind for e in await store.events("ps_2")] == ["webhook", "relay"]
    assert await store.finish_attempts([Attempt(taken, 40.0, 200, "delivered", 40.0)]) == [True]


async def test_one_page_holds_a_sessions_bank_step_until_another_takes_it(store: Store) -> None:
    assert await store.hold_step("ps_1", "tab-a", 1.0, take=False)
    assert await store.hold_step("ps_1", "tab-a", 2.0, take=False)  # asking again
    assert not await store.hold_step("ps_1", "tab-b", 3.0, take=False)
    assert await store.hold_step("ps_2", "tab-b", 3.0, take=False)  # each session its own
    assert await store.hold_step("ps_1", "tab-b", 4.0, take=True)
    assert not await store.hold_step("ps_1", "tab-a", 5.0, take=False)
    assert await store.hold_step("ps_1", "tab-b", 6.0, take=False)


async def test_a_handoff_is_claimed_once_before_it_expires(store: Store) -> None:
    link = Handoff(hashlib.sha256(b"secret").digest(), "ps_1", "https://shop.example/r", 100.0)
    await store.add_handoff(link)
    assert await store.handoff(link.digest) == link
    assert await store.handoff(hashlib.sha256(b"other").digest()) is None
    assert await store.hold_step("ps_1", "desktop", 10.0, take=False)
    claimed = await store.claim_handoff(link.digest, "phone", 20.0)
    assert claimed == Handoff(link.digest, "ps_1", "https://shop.example/r", 100.0, 20.0)
    assert await store.claim_handoff(link.digest, "another-phone", 21.0) is None
    assert not await store.hold_step("ps_1", "desktop", 22.0, take=False)
    assert await store.hold_step("ps_1", "phone", 22.0, take=False)
    assert [(e.kind, e.detail) for e in await store.events("ps_1")] == [
        ("browser", {"event": "handoff", "mode": None})
    ]
    late = Handoff(hashlib.sha256(b"late").digest(), "ps_1", None, 100.0)
    await store.add_handoff(late)
    assert await store.claim_handoff(late.digest, "phone", 100.0) is None  # expired


async def test_retention_deletes_old_handoffs_and_holders(store: Store) -> None:
    old = Handoff(hashlib.sha256(b"old").digest(), "ps_1", None, 50.0)
    new = Handoff(hashlib.sha256(b"new").digest(), "ps_2", None, 500.0)
    for link in (old, new):
        await store.add_handoff(link)
    await store.hold_step("ps_1", "tab-a", 50.0, take=False)
    await store.hold_step("ps_2", "tab-a", 500.0, take=False)
    assert await store.forget(100.0, 1000, 1000.0) == 2
    assert await store.handoff(old.digest) is None
    assert await store.handoff(new.digest) == new
    assert await store.hold_step("ps_1", "tab-b", 600.0, take=False)  # free again
    assert not await store.hold_step("ps_2", "tab-b", 600.0, take=False)


async def test_sqlite_counts_the_relay_backlog_off_the_event_loop(tmp_path: Path) -> None:
    """The count reads every pending delivery's index entry (tens of ms for a backlog of
    100,000, every few seconds in every process): the loop serves others meanwhile."""
    store = SQLiteStore(str(tmp_path / "bridge.sqlite3"), timeout=DB_TIMEOUT)
    await store.open()
    turns = 0

    async def ticking() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(ticking())
    await asyncio.sleep(0)
    try:
        before = turns
        assert await store.relay_backlog() == (0, None)
        assert turns > before  # the loop went on with other work while the count ran
    finally:
        ticker.cancel()
        await store.close()
