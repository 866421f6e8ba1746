from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path

from app.lifecycle import Session, Status, new_session
from app.store import Delivery, open_store
from app.store.sqlite import MIGRATIONS


def delivery(body: bytes, session_id: str = "ps_1") -> Delivery:
    return Delivery(hashlib.sha256(body).digest(), body, session_id, "action_required", 10.0)


def moved(status: Status) -> Callable[[Session | None], Session]:
    def update(session: Session | None) -> Session:
        return Session(id="ps_1", status=status, created_at=1.0, updated_at=2.0)

    return update


async def test_schema_is_created_and_upgrades_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/bridge.sqlite3"
    for _ in range(2):
        store = open_store(url)
        await store.open()
        await store.close()
    with sqlite3.connect(tmp_path / "nested/dir/bridge.sqlite3") as db:
        versions = db.execute("SELECT version FROM schema_version").fetchall()
        journal = db.execute("PRAGMA journal_mode").fetchone()
    assert versions == [(number,) for number in range(1, len(MIGRATIONS) + 1)]
    assert journal == ("wal",)


async def test_what_was_committed_survives_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/bridge.sqlite3"
    store = open_store(url)
    await store.open()
    changed = await store.record_webhook(delivery(b"one"), moved(Status.ACTION_REQUIRED))
    assert changed.before is None and changed.after is not None and not changed.duplicate
    await store.close()
    store = open_store(url)
    await store.open()
    session = await store.get_session("ps_1")
    again = await store.record_webhook(delivery(b"one"), moved(Status.SUCCEEDED))
    await store.close()
    assert session is not None and session.status is Status.ACTION_REQUIRED
    assert again.duplicate and again.after == session


async def test_an_update_that_raises_writes_nothing(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/bridge.sqlite3")
    await store.open()

    def broken(session: Session | None) -> Session:
        raise RuntimeError("boom")

    try:
        await store.record_webhook(delivery(b"two"), broken)
    except RuntimeError:
        pass
    else:
        raise AssertionError("the update's error was swallowed")
    # The delivery was rolled back with the session: it can be delivered again.
    retried = await store.record_webhook(delivery(b"two"), moved(Status.ACTION_REQUIRED))
    await store.close()
    assert not retried.duplicate


async def test_sessions_due_lists_only_expired_actions(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/bridge.sqlite3")
    await store.open()
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
    await store.close()


async def test_changes_wake_watchers_only_when_something_changed(tmp_path: Path) -> None:
    import asyncio

    store = open_store(f"sqlite:///{tmp_path}/bridge.sqlite3")
    await store.open()
    with store.changes.watch("ps_1") as changed:
        await store.update_session("ps_1", lambda session: session)  # nothing to write
        assert not changed.done()
        await store.update_session("ps_1", moved(Status.PENDING))
        await asyncio.wait_for(changed, timeout=1)
    assert store.changes.waiting == 0
    await store.close()


async def test_a_cancelled_writer_still_commits_and_wakes_its_watchers(tmp_path: Path) -> None:
    import asyncio

    store = open_store(f"sqlite:///{tmp_path}/bridge.sqlite3")
    await store.open()
    with store.changes.watch("ps_1") as changed:
        writer = asyncio.create_task(
            store.record_webhook(delivery(b"hung up"), moved(Status.ACTION_REQUIRED))
        )
        await asyncio.sleep(0)  # the write has started
        writer.cancel()
        await asyncio.wait_for(changed, timeout=2)
    session = await store.get_session("ps_1")
    await store.close()
    assert session is not None and session.status is Status.ACTION_REQUIRED


async def test_commits_are_synchronous_full(tmp_path: Path) -> None:
    from app.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "bridge.sqlite3"))
    await store.open()
    async with store._write().execute("PRAGMA synchronous") as cursor:
        level = await cursor.fetchone()
    await store.close()
    assert level == (2,)  # FULL: the WAL is synced on every commit
