"""SQLite storage through aiosqlite: WAL, ``synchronous=FULL`` (a commit is on disk), one writer.

Several processes may share the file (``serve --workers``): each committed change is also
appended to a ``changes`` table, which every process polls to wake its own long-polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from ..lifecycle import Session, Status
from . import (
    SESSION_COLUMNS,
    Changed,
    Delivery,
    StorageUnavailableError,
    Store,
    Update,
    session_from_row,
    session_row,
)

# aiosqlite logs every statement with its parameters at DEBUG: webhook bodies, PaReq and MD
# included. Those must never reach a log, whatever level an operator picks.
logging.getLogger("aiosqlite").setLevel(logging.WARNING)
log = logging.getLogger(__name__)

# Each entry upgrades the schema by one version; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        digest BLOB NOT NULL UNIQUE,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at REAL NOT NULL,
        body BLOB NOT NULL
    );
    CREATE INDEX webhooks_by_session ON webhooks (session_id, id);
    CREATE TABLE sessions (
        session_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        reason TEXT,
        interaction TEXT,
        action_received_at REAL,
        action_expires_at REAL,
        returned_at REAL,
        payments TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX sessions_by_action_expiry ON sessions (action_expires_at)
        WHERE status = 'action_required';
    """,
    """
    CREATE INDEX webhooks_by_received_at ON webhooks (received_at);
    """,
    # Changes announced to other processes sharing this file (see SQLiteStore._follow).
    """
    CREATE TABLE changes (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL);
    """,
)
# The most writes one transaction commits together.
MAX_BATCH = 256
# How often other processes' changes are looked for, and how many are kept for them.
POLL_INTERVAL = 0.05
CHANGES_KEPT = 10_000

_UPSERT = (
    f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET status = excluded.status,"
    " reason = excluded.reason, interaction = excluded.interaction,"
    " action_received_at = excluded.action_received_at,"
    " action_expires_at = excluded.action_expires_at, returned_at = excluded.returned_at,"
    " payments = excluded.payments, updated_at = excluded.updated_at"
)
_SELECT = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE session_id = ?"


class SQLiteStore(Store):
    def __init__(self, path: str, *, timeout: float = 5.0) -> None:
        super().__init__()
        self.path = path
        self._timeout = timeout
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._follower: asyncio.Task[None] | None = None

    async def open(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._writer.execute("PRAGMA journal_mode = WAL")
        await self._migrate(self._writer)
        self._reader = await self._connect()
        await self._reader.execute("PRAGMA query_only = ON")
        async with self._reader.execute("SELECT coalesce(max(id), 0) FROM changes") as cursor:
            row = await cursor.fetchone()
        self._follower = asyncio.create_task(self._follow(row[0] if row else 0))
        self._committer = asyncio.create_task(self._commit_batches())

    async def _connect(self) -> aiosqlite.Connection:
        connection = await aiosqlite.connect(self.path, isolation_level=None)
        await connection.execute("PRAGMA synchronous = FULL")
        await connection.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        return connection

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            async with db.execute("SELECT max(version) FROM schema_version") as cursor:
                row = await cursor.fetchone()
            version = (row[0] if row else None) or 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        self._closing = True  # no write is queued behind the last one
        if self._committer is not None:
            self._jobs.put_nowait(None)  # the writes already queued are committed first
            await self._committer
        for connection in (self._reader, self._writer):
            if connection is not None:
                await connection.close()
        self._reader = self._writer = self._committer = None

    async def ping(self) -> None:
        with _unavailable_on_trouble():
            async with self._read().execute("SELECT 1") as cursor:
                await cursor.fetchone()

    async def record_webhook(self, delivery: Delivery, update: Update) -> Changed:
        async def work(db: aiosqlite.Connection) -> Changed:
            cursor = await db.execute(
                "INSERT INTO webhooks (digest, session_id, type, received_at, body)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
                (
                    delivery.digest,
                    delivery.session_id,
                    delivery.type,
                    delivery.received_at,
                    delivery.body,
                ),
            )
            if cursor.rowcount == 0:
                session = await self._select(db, delivery.session_id)
                return Changed(before=session, after=session, duplicate=True)
            return await self._change(db, delivery.session_id, update)

        return await self._transaction(delivery.session_id, work)

    async def update_session(self, session_id: str, update: Update) -> Changed:
        return await self._transaction(session_id, lambda db: self._change(db, session_id, update))

    async def get_session(self, session_id: str) -> Session | None:
        with _unavailable_on_trouble():
            return await self._select(self._read(), session_id)

    async def sessions_due(self, now: float, limit: int = 500) -> list[str]:
        async with self._read().execute(
            "SELECT session_id FROM sessions WHERE status = ? AND action_expires_at <= ?"
            " ORDER BY action_expires_at LIMIT ?",
            (Status.ACTION_REQUIRED.value, now, limit),
        ) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def _change(self, db: aiosqlite.Connection, session_id: str, update: Update) -> Changed:
        before = await self._select(db, session_id)
        after = update(before)
        if after is not None and after != before:
            await db.execute(_UPSERT, session_row(after))
        return Changed(before=before, after=after)

    @staticmethod
    async def _select(db: aiosqlite.Connection, session_id: str) -> Session | None:
        async with db.execute(_SELECT, (session_id,)) as cursor:
            return session_from_row(await cursor.fetchone())

    async def _transaction(
        self, session_id: str, work: Callable[[aiosqlite.Connection], Awaitable[Changed]]
    ) -> Changed:
        # Shielded: a client that hangs up neither cuts a transaction in half nor keeps its
        # waiters from hearing of a change that was committed.
        with _unavailable_on_trouble():
            return await asyncio.shield(self._commit_and_publish(session_id, work))

    async def _commit_and_publish(
        self, session_id: str, work: Callable[[aiosqlite.Connection], Awaitable[Changed]]
    ) -> Changed:
        if self._committer is None or self._closing:
            raise StorageUnavailableError("the store is not open")
        job = _Job(session_id, work, asyncio.get_running_loop().create_future())
        self._jobs.put_nowait(job)
        return await job.done

    async def _commit_batches(self) -> None:
        """Group commit: every write waiting is done in one transaction, one savepoint each,
        so one fsync makes a whole batch durable; each answer waits for its COMMIT."""
        while True:
            batch = [await self._jobs.get()]
            while not self._jobs.empty() and len(batch) < MAX_BATCH:
                batch.append(self._jobs.get_nowait())
            jobs = [job for job in batch if job is not None]
            if jobs:
                try:
                    await self._commit(jobs)
                except Exception as error:  # the committer must outlive any one batch
                    log.exception("a batch of writes failed")
                    for job in jobs:
                        _settle(job, error=StorageUnavailableError(str(error)))
            if None in batch:
                return

    async def _commit(self, jobs: list[_Job]) -> None:
        db = self._write()
        done: list[tuple[_Job, Changed]] = []
        try:
            await db.execute("BEGIN IMMEDIATE")
            for job in jobs:
                await db.execute("SAVEPOINT job")
                try:
                    changed = await job.work(db)
                    if changed.after != changed.before:
                        await db.execute(
                            "INSERT INTO changes (session_id) VALUES (?)", (job.session_id,)
                        )
                except Exception as error:  # this job alone fails; the batch goes on
                    await db.execute("ROLLBACK TO job")
                    _settle(job, error=error)
                else:
                    done.append((job, changed))
                finally:
                    await db.execute("RELEASE job")
            await db.execute("COMMIT")
        except sqlite3.Error as error:
            if db.in_transaction:  # SQLite may have rolled back by itself already
                await db.execute("ROLLBACK")
            for job, _ in done:
                _settle(job, error=error)
            for job in jobs:
                _settle(job, error=error)
            return
        for job, changed in done:
            _settle(job, changed=changed)
            if changed.after != changed.before:
                self.changes.publish(job.session_id)

    async def _follow(self, seen: int) -> None:
        """Wake this process's waiters for changes other processes committed."""
        polls = 0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                async with self._read().execute(
                    "SELECT id, session_id FROM changes WHERE id > ? ORDER BY id", (seen,)
                ) as cursor:
                    rows = await cursor.fetchall()
                if rows and rows[0][0] > seen + 1 and seen:
                    self.changes.publish_all()  # fell behind the pruning: news was lost
                for seen, session_id in rows:  # noqa: B007 - the last id seen is kept
                    self.changes.publish(session_id)
                polls += 1
                if polls % 1200 == 0:  # about once a minute
                    await self._forget_old_changes()
            except sqlite3.Error:
                log.exception("could not read other processes' changes; trying again")

    async def _forget_old_changes(self) -> None:
        async def forget(db: aiosqlite.Connection) -> Changed:
            await db.execute(
                "DELETE FROM changes WHERE id < (SELECT max(id) FROM changes) - ?", (CHANGES_KEPT,)
            )
            return Changed(before=None, after=None)

        await self._commit_and_publish("", forget)

    def _write(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StorageUnavailableError("the store is not open")
        return self._writer

    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StorageUnavailableError("the store is not open")
        return self._reader


@contextlib.contextmanager
def _unavailable_on_trouble() -> Iterator[None]:
    """A locked, full, unreadable or closed database: answer 503 and let the caller retry."""
    try:
        yield
    except sqlite3.OperationalError as error:
        raise StorageUnavailableError(str(error)) from error


@dataclass(eq=False)
class _Job:
    """One write waiting for the committer."""

    session_id: str
    work: Callable[[aiosqlite.Connection], Awaitable[Changed]]
    done: asyncio.Future[Changed]


def _settle(
    job: _Job, *, changed: Changed | None = None, error: BaseException | None = None
) -> None:
    if job.done.done():  # settled already, or its caller hung up (the write went on)
        return
    if error is not None:
        job.done.set_exception(error)
    else:
        assert changed is not None
        job.done.set_result(changed)
