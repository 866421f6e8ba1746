"""SQLite storage: WAL, ``synchronous=FULL`` (a commit is on disk), group commit.

One library, ``sqlite3``, and two connections per process, each with one job:

- The event loop's, read-only and never waiting for a lock (``busy_timeout = 0``), serves
  every read. Each is by key or by index and bounded, microseconds from the page cache: less
  than a hop to another thread costs (a page not cached yet is read from disk meanwhile,
  blocking the loop). WAL lets reads run beside a write; should SQLite still answer busy (a
  checkpoint or a recovery under way), the read is asked again in the writer's thread, whose
  connection may wait.
- The writer thread's serves every write: a whole batch of waiting writes runs there in one
  call, one transaction with a savepoint each, so one fsync and one hop between threads serve
  many webhooks. Each answer waits for its COMMIT; the event loop never waits for a write.
- Several processes may share the file (``serve --workers``): each committed change is also
  appended to a ``changes`` table, which every process polls (:meth:`SQLiteStore.caught_up`)
  to wake its own long-polls. Their writers take turns on an ``flock`` first: SQLite's own
  busy wait sleeps up to 100 ms at a time, where a waiter on the lock file wakes the moment it
  is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..framing import BankRecord, BankSteps, Frames
from ..lifecycle import Session, Status
from ..tasks import stopped
from . import (
    Attempt,
    Changed,
    Delivery,
    DeliveryRecord,
    DeliveryState,
    Event,
    Forgotten,
    Handoff,
    RelayJob,
    StorageUnavailableError,
    Store,
    Update,
    migrations,
    sql,
)

log = logging.getLogger(__name__)

# The most writes one transaction commits together.
MAX_BATCH = 256
# How often other processes' changes are looked for, and how many are kept for them.
POLL_INTERVAL = 0.05
CHANGES_KEPT = 10_000
ANNOUNCE = "INSERT INTO changes (session_id) VALUES (?)"  # a change other processes hear of
WRITER_THREAD = "sqlite-writer"  # how the writer thread of an open store is named

T = TypeVar("T")


class SQLiteStore(Store):
    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__()
        self.path = path
        self._timeout = timeout
        self._reader: sqlite3.Connection | None = None  # the loop's: every read, never waits
        self._writer: sqlite3.Connection | None = None  # the writer thread's: every write
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix=WRITER_THREAD)
        self._turn: int | None = None  # the lock file's descriptor, shared by the processes
        self._jobs: asyncio.Queue[_Job | None] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._follower: asyncio.Task[None] | None = None
        self._seen_change = 0  # the last row of ``changes`` published here
        self._data_version: int | None = None  # the file's, as the loop's connection saw it

    async def open(self) -> None:
        if sqlite3.sqlite_version_info < (3, 35):  # INSERT ... RETURNING
            raise RuntimeError(f"SQLite 3.35 or newer is needed, found {sqlite3.sqlite_version}")
        # Webhook bodies hold PaReq, MD and card data: the files are the bridge's user's alone
        # (SQLite gives its -wal and -shm files the database file's mode).
        Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._turn = os.open(f"{self.path}-writers.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._writer = await self._in_writer(self._open_writer)
        self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._reader.execute("PRAGMA busy_timeout = 0")
        self._reader.execute("PRAGMA query_only = ON")
        [(self._seen_change,)] = await self._read("SELECT coalesce(max(id), 0) FROM changes")
        self._follower = asyncio.create_task(self._follow())
        self._committer = asyncio.create_task(self._commit_batches())

    def describe(self) -> str:
        return f"SQLite at {Path(self.path).resolve()}"

    def _open_writer(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        assert self._turn is not None
        # In the writers' turn: an upgrade another process runs may rewrite whole tables, for
        # longer than any busy timeout; this one waits for it, however long.
        fcntl.flock(self._turn, fcntl.LOCK_EX)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
            _migrate(db)
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)
        return db

    async def _in_writer(self, call: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer_thread, call, *args)

    async def close(self) -> None:
        if self._follower is not None:
            await stopped(self._follower)
        self._closing = True  # no write is queued behind the last one
        if self._committer is not None:
            self._jobs.put_nowait(None)  # the writes already queued are committed first
            await self._committer
            self._committer = None
        if self._reader is not None:
            reader, self._reader = self._reader, None  # no read starts on it once closing
            reader.close()
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await self._in_writer(writer.close)  # after any read already handed to it
        if self._turn is not None:
            os.close(self._turn)
            self._turn = None
        self._writer_thread.shutdown()

    async def _read(self, statement: str, args: tuple[object, ...] = ()) -> list[Any]:
        """One bounded read on the loop's connection; should it say busy, asked again of the
        writer's, which may wait. A failure there is :class:`StorageUnavailableError`."""
        if self._reader is None:
            raise StorageUnavailableError("the store is not open")
        try:
            return self._reader.execute(statement, args).fetchall()
        except sqlite3.OperationalError:
            with _unavailable_on_trouble():
                return await self._in_writer(_fetch, self._write(), statement, args)

    def _write(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StorageUnavailableError("the store is not open")
        return self._writer

    async def ping(self) -> None:
        await self._read("SELECT 1")

    async def get_session(self, session_id: str) -> Session | None:
        rows = await self._read(sql.SELECT_SESSION, (session_id,))
        return sql.session_from_row(rows[0] if rows else None)

    async def events(self, session_id: str) -> list[Event]:
        return [
            sql.event_from_row(row) for row in await self._read(sql.SELECT_EVENTS, (session_id,))
        ]

    async def deliveries(
        self,
        state: DeliveryState | None,
        limit: int,
        *,
        session_id: str | None = None,
        before: int | None = None,
    ) -> list[DeliveryRecord]:
        rows = await self._read(*sql.listing(state, session_id, before, limit))
        return [sql.delivery_record(row) for row in rows]

    async def relay_backlog(self) -> tuple[int, float | None]:
        """Counted on a connection of its own in a thread: the count reads every pending
        delivery's index entry (tens of ms for a backlog of 100,000), which the loop's
        connection would make every request wait for."""
        with _unavailable_on_trouble():
            [(count, oldest)] = await asyncio.to_thread(_read_aside, self.path, sql.RELAY_BACKLOG)
        return count, oldest

    async def sessions_due(self, now: float, limit: int = 500) -> list[str]:
        rows = await self._read(sql.SESSIONS_DUE, (Status.ACTION_REQUIRED.value, now, limit))
        return [row[0] for row in rows]

    async def record_webhook(self, delivery: Delivery, update: Update) -> Changed:
        def work(db: sqlite3.Connection) -> Changed:
            *row, at, detail, said_before = db.execute(
                sql.SQLITE_WEBHOOK_NEWS, (delivery.session_id, delivery.meaning)
            ).fetchone()
            session = sql.session_from_row(row if row[0] is not None else None)
            if session is None:  # new, or deleted by retention: then a replay is no news
                forgotten = sql.forgotten_from_row(None if at is None else (at, detail))
                if forgotten is not None and forgotten.replayed(delivery):
                    return Changed(before=None, after=None, ignored=True)
            inserted = db.execute(sql.INSERT_WEBHOOK, sql.webhook_row(delivery)).fetchone()
            if inserted is None or said_before:
                changed = Changed(before=session, after=session, duplicate=inserted is None)
            else:
                changed = _change(db, session, update)
            if inserted is not None and delivery.relay_signature is not None:
                db.execute(sql.INSERT_DELIVERY, sql.delivery_row(inserted[0], delivery))
            if emitted := self.emitted(changed, delivery.received_at):
                db.executemany(sql.INSERT_DELIVERY, emitted)
            db.execute(sql.INSERT_EVENT, sql.event_row(sql.webhook_event(delivery, changed)))
            return changed

        return await self._transaction(delivery.session_id, work)

    async def update_session(
        self, session_id: str, update: Update, event: Event | None = None
    ) -> Changed:
        def work(db: sqlite3.Connection) -> Changed:
            changed = _change(db, _select(db, session_id), update)
            db.executemany(
                sql.INSERT_DELIVERY, self.emitted(changed, sql.recorded_at(changed, event))
            )
            if event is not None and changed.after != changed.before:
                db.execute(sql.INSERT_EVENT, sql.event_row(event))
            return changed

        return await self._transaction(session_id, work)

    async def add_event(self, event: Event) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(sql.INSERT_EVENT, sql.event_row(event))

        await self._transaction("", work)

    async def add_counted_event(self, event: Event, most: int) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            [(count,)] = db.execute(sql.COUNT_EVENTS, (event.session_id, event.kind)).fetchall()
            if count >= most:
                return False
            db.execute(sql.INSERT_EVENT, sql.event_row(event))
            return True

        return await self._transaction("", work)

    async def claim_deliveries(self, now: float, until: float, limit: int) -> list[RelayJob]:
        def work(db: sqlite3.Connection) -> list[RelayJob]:
            rows = db.execute(sql.CLAIM_DELIVERIES, (until, now, now, now, limit))
            jobs = []
            for row in rows.fetchall():
                body = (
                    (row[9],)
                    if row[9] is not None
                    else (db.execute(sql.SELECT_BODY, (row[1], row[2])).fetchone())
                )
                if body is None:
                    db.execute(sql.FAIL_DELIVERY, (row[0],))
                    sql.log_missing_body(row)
                else:
                    jobs.append(sql.relay_job(row, body[0], until))
            return jobs

        return await self._transaction("", work)

    async def finish_attempts(self, attempts: Sequence[Attempt]) -> list[bool]:
        if not attempts:
            return []

        def work(db: sqlite3.Connection) -> list[bool]:
            # One by one: each answers whether its claim still held.
            recorded = [
                db.execute(sql.FINISH_ATTEMPT, sql.attempt_row(attempt)).rowcount == 1
                for attempt in attempts
            ]
            put_off, events = sql.after_attempts(attempts, recorded)
            db.executemany(sql.PUT_OFF_LATER, put_off)
            db.executemany(sql.INSERT_EVENT, events)
            return recorded

        return await self._transaction("", work)

    async def retry_delivery(self, delivery_id: str, now: float) -> bool | None:
        def work(db: sqlite3.Connection) -> bool | None:
            if db.execute(sql.RETRY_DELIVERY, (now, now, now, delivery_id)).rowcount:
                return True
            return False if db.execute(sql.DELIVERY_EXISTS, (delivery_id,)).fetchone() else None

        return await self._transaction("", work)

    async def retry_failed(self, now: float, session_id: str | None = None) -> int:
        def work(db: sqlite3.Connection) -> int:
            if session_id is None:
                return db.execute(sql.RETRY_FAILED, (now, now, now)).rowcount
            return db.execute(sql.RETRY_FAILED_OF_SESSION, (now, now, now, session_id)).rowcount

        return await self._transaction("", work)

    async def forget(self, before: float, limit: int, now: float) -> int:
        def work(db: sqlite3.Connection) -> int:
            gone = sum(
                db.execute(statement, (before, limit)).rowcount
                for statement in (
                    sql.FORGET_DELIVERIES,
                    sql.FORGET_WEBHOOKS,
                    sql.FORGET_STEP_HOLDERS,
                    sql.FORGET_HANDOFFS,
                )
            )
            sessions = db.execute(sql.FORGET_SESSIONS, (before, limit)).fetchall()
            db.executemany(ANNOUNCE, [row[:1] for row in sessions])
            db.executemany(sql.INSERT_EVENT, [sql.forgotten_event(row, now) for row in sessions])
            return gone + len(sessions)

        return await self._transaction("", work)

    async def hold_step(self, session_id: str, page: str, at: float, *, take: bool) -> bool:
        if not take:  # a page asking again whether it holds the step reads, never writes
            rows = await self._read(sql.SELECT_STEP_HOLDER, (session_id,))
            if rows:
                return bool(rows[0][0] == page)

        def work(db: sqlite3.Connection) -> bool:
            if take:
                db.execute(sql.TAKE_STEP, (session_id, page, at))
                return True
            return db.execute(sql.HOLD_STEP, (session_id, page, at)).fetchone() is not None

        return await self._transaction("", work)

    async def add_handoff(self, handoff: Handoff) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(sql.INSERT_HANDOFF, sql.handoff_row(handoff))

        await self._transaction("", work)

    async def handoff(self, digest: bytes) -> Handoff | None:
        rows = await self._read(sql.SELECT_HANDOFF, (digest,))
        return sql.handoff_from_row(rows[0] if rows else None)

    async def claim_handoff(self, digest: bytes, page: str, now: float) -> Handoff | None:
        def work(db: sqlite3.Connection) -> Handoff | None:
            claimed = sql.handoff_from_row(
                db.execute(sql.CLAIM_HANDOFF, (now, digest, now)).fetchone()
            )
            if claimed is not None:
                db.execute(sql.TAKE_STEP, (claimed.session_id, page, now))
                db.execute(sql.INSERT_EVENT, sql.event_row(sql.handoff_event(claimed)))
            return claimed

        return await self._transaction("", work)

    async def bank(self, origin: str) -> BankRecord | None:
        rows = await self._read(sql.SELECT_BANK, (origin,))
        return sql.bank_from_row(rows[0] if rows else None)

    async def claim_bank_look(self, origin: str, now: float, since: float) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return db.execute(sql.CLAIM_BANK_LOOK, (origin, now, since)).fetchone() is not None

        return await self._transaction("", work)

    async def record_bank_look(self, origin: str, headers: Frames | None) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(sql.RECORD_BANK_LOOK, (headers, origin))

        await self._transaction("", work)

    async def count_bank_steps(self, origin: str, steps: BankSteps) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(sql.COUNT_BANK_STEPS, sql.bank_steps_row(origin, steps))

        await self._transaction("", work)

    async def forgotten(self, session_id: str) -> Forgotten | None:
        rows = await self._read(sql.SELECT_FORGOTTEN, (session_id,))
        return sql.forgotten_from_row(rows[0] if rows else None)

    async def _transaction(self, session_id: str, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._committer is None or self._closing:
            raise StorageUnavailableError("the store is not open")
        job = _Job(session_id, work, asyncio.get_running_loop().create_future())
        self._jobs.put_nowait(job)
        # Shielded: a client that hangs up does not take its write back; it is committed, and
        # the waiters hear of it.
        with _unavailable_on_trouble():
            done: T = await asyncio.shield(job.done)
            return done

    async def _commit_batches(self) -> None:
        """Group commit: every write waiting is done in one transaction, a savepoint each, so
        one fsync makes a whole batch durable; each answer waits for its COMMIT."""
        while True:
            batch = [await self._jobs.get()]
            while not self._jobs.empty() and len(batch) < MAX_BATCH:
                batch.append(self._jobs.get_nowait())
            jobs = [job for job in batch if job is not None]
            if jobs:
                try:
                    outcomes = await self._in_writer(_commit, self._write(), self._turn, jobs)
                except Exception as error:  # the committer must outlive any one batch
                    log.exception("a batch of writes failed")
                    outcomes = [StorageUnavailableError(str(error))] * len(jobs)
                for job, outcome in zip(jobs, outcomes, strict=True):
                    _settle(job, outcome)
                    if isinstance(outcome, Changed) and outcome.after != outcome.before:
                        self.changes.publish(job.session_id)
            if None in batch:
                return

    async def caught_up(self) -> bool:
        """``PRAGMA data_version`` tells, without touching the file, whether any connection
        committed since the loop's connection last looked; only then is ``changes`` read."""
        reader = self._reader
        if reader is None:
            return False
        try:
            version = reader.execute("PRAGMA data_version").fetchone()[0]
            if version == self._data_version:
                return True
            seen = self._seen_change
            rows = reader.execute(
                "SELECT id, session_id FROM changes WHERE id > ? ORDER BY id", (seen,)
            ).fetchall()
        except sqlite3.Error:
            return False
        if rows and rows[0][0] > seen + 1 and seen:
            self.changes.publish_all()  # fell behind the pruning: news was lost
        for change_id, session_id in rows:
            self.changes.publish(session_id)
            self._seen_change = change_id
        self._data_version = version
        return True

    async def _follow(self) -> None:
        """Wake this process's waiters for changes other processes committed."""
        polls = 0
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                if not await self.caught_up():
                    log.warning("could not read other processes' changes; trying again")
                polls += 1
                if polls % 1200 == 0:  # about once a minute
                    await self._transaction("", _forget_old_changes)
            except (sqlite3.Error, StorageUnavailableError):
                log.exception("could not read other processes' changes; trying again")


@dataclass(eq=False)
class _Job:
    """One write waiting for the committer; ``session_id`` is announced when it changed."""

    session_id: str
    work: Callable[[sqlite3.Connection], Any]
    done: asyncio.Future[Any]


def _commit(db: sqlite3.Connection, turn: int | None, jobs: list[_Job]) -> list[Any]:
    """In the writer's thread: one transaction for the batch, a savepoint for each job."""
    if turn is not None:
        fcntl.flock(turn, fcntl.LOCK_EX)  # this process's turn to write
    try:
        return _commit_in_turn(db, jobs)
    finally:
        if turn is not None:
            fcntl.flock(turn, fcntl.LOCK_UN)


def _commit_in_turn(db: sqlite3.Connection, jobs: list[_Job]) -> list[Any]:
    outcomes: list[Any] = []
    announced = []  # the sessions whose change other processes hear of
    try:
        db.execute("BEGIN IMMEDIATE")
        for job in jobs:
            db.execute("SAVEPOINT job")
            try:
                changed = job.work(db)
            except Exception as error:  # this job alone fails; the batch goes on
                db.execute("ROLLBACK TO job")
                outcomes.append(error)
            else:
                outcomes.append(changed)
                if isinstance(changed, Changed) and changed.after != changed.before:
                    announced.append((job.session_id,))
            finally:
                db.execute("RELEASE job")
        db.executemany(ANNOUNCE, announced)
        db.execute("COMMIT")
    except sqlite3.Error as error:
        if db.in_transaction:  # SQLite may have rolled back by itself already
            db.execute("ROLLBACK")
        return [error] * len(jobs)
    return outcomes


def _read_aside(path: str, statement: str) -> list[Any]:
    """A read on a connection opened for it alone (read-only), closed after."""
    db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return db.execute(statement).fetchall()
    finally:
        db.close()


def _fetch(db: sqlite3.Connection, statement: str, args: tuple[object, ...]) -> list[Any]:
    return db.execute(statement, args).fetchall()


def _settle(job: _Job, outcome: Any) -> None:
    if job.done.done():  # settled already (the caller's own wait is shielded)
        return
    if isinstance(outcome, BaseException):
        job.done.set_exception(outcome)
    else:
        job.done.set_result(outcome)


def _migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        version = db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
        for number, migration in enumerate(migrations.MIGRATIONS[version:], start=version + 1):
            for statement in filter(str.strip, migration.sqlite.split(";")):
                db.execute(statement)
            if number == migrations.DATED:
                _date_sessions(db)
            db.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _date_sessions(db: sqlite3.Connection) -> None:
    for session_id, status in db.execute(migrations.UNDATED_SESSIONS).fetchall():
        bodies = [row[0] for row in db.execute(migrations.SESSION_BODIES, (session_id,))]
        db.execute(
            migrations.DATE_SESSION, (*migrations.provider_clock(status, bodies), session_id)
        )


def _select(db: sqlite3.Connection, session_id: str) -> Session | None:
    return sql.session_from_row(db.execute(sql.SELECT_SESSION, (session_id,)).fetchone())


def _change(db: sqlite3.Connection, before: Session | None, update: Update) -> Changed:
    """``before``: the session as this transaction read it."""
    after = update(before)
    if after is not None and after != before:
        db.execute(sql.UPSERT_SESSION, sql.session_row(after))
    return Changed(before=before, after=after)


def _forget_old_changes(db: sqlite3.Connection) -> Changed:
    db.execute("DELETE FROM changes WHERE id < (SELECT max(id) FROM changes) - ?", (CHANGES_KEPT,))
    return Changed(before=None, after=None)


@contextlib.contextmanager
def _unavailable_on_trouble() -> Iterator[None]:
    """A locked, full, unreadable or closed database: answer 503 and let the caller retry."""
    try:
        yield
    except sqlite3.OperationalError as error:
        raise StorageUnavailableError(str(error)) from error
