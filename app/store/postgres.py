"""PostgreSQL storage through asyncpg, for several bridge instances sharing one database.

- Every write to a session takes a transaction-scoped advisory lock on the session id, so
  instances serialize per session without table locks; duplicates collide on a unique index.
- A change is announced with ``pg_notify`` inside the transaction, so it is delivered only once
  committed; each instance listens on one connection and wakes its own long-polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg

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
from .sql import POSTGRES

log = logging.getLogger(__name__)
T = TypeVar("T")

CHANNEL = "bridge_session_changed"
_MIGRATION_LOCK = 7_267_040_101  # any constant shared by every instance
# A version recorded in the numbering both engines share (migrations.MIGRATIONS).
_SHARED = "shared"

# Connection trouble of any kind: the database is unreachable, restarting, full or timing out.
_UNAVAILABLE = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError)
# SQLSTATE classes that mean "not now" rather than "wrong": connection exceptions (08),
# insufficient resources such as too many connections (53), operator intervention such as a
# shutdown or a crash (57).
_UNAVAILABLE_CLASSES = ("08", "53", "57")
# Every statement here reads a few index entries, but the planner costs some (the relay's claim,
# the backlog's count) by the whole pending backlog: past jit_above_cost, PostgreSQL compiled
# them to machine code first, up to 70 ms each time for a claim that runs in 1 to 4.
SERVER_SETTINGS = {"jit": "off"}
# How the relay's claim is planned (see claim_deliveries).
CLAIM_PLANNING = "SET LOCAL plan_cache_mode = force_custom_plan; SET LOCAL enable_sort = off"


async def _durability_warnings(db: asyncpg.Connection) -> list[str]:
    """What makes a commit the bridge acknowledges less than durable on this server, as the
    bridge's own connections see it (``synchronous_commit`` may be set per role, database or
    connection)."""
    fsync, synchronous_commit = await db.fetchrow(
        "SELECT current_setting('fsync'), current_setting('synchronous_commit')"
    )
    warnings = []
    if fsync != "on":
        warnings.append(
            "PostgreSQL runs with fsync off: a power cut or an operating system crash can lose"
            " or corrupt webhooks the bridge has answered 200"
        )
    if synchronous_commit == "off":
        warnings.append(
            "PostgreSQL's synchronous_commit is off for the bridge: a crash of the database"
            " server can lose the last webhooks the bridge has answered 200"
        )
    return warnings


async def _keep_session_state(db: asyncpg.Connection) -> None:
    """Given back to the pool, a connection is not reset with a query of its own (a round trip
    on every release): nothing here leaves session state behind.
    Advisory locks are transaction-scoped, nobody LISTENs or SETs on a pooled connection (the
    listener has a connection of its own), and asyncpg still rolls back an open transaction."""


def _is_unavailable(error: BaseException) -> bool:
    if isinstance(error, _UNAVAILABLE):
        return True
    state = getattr(error, "sqlstate", None) or ""
    return isinstance(error, asyncpg.PostgresError) and state[:2] in _UNAVAILABLE_CLASSES


class PostgresStore(Store):
    def __init__(self, dsn: str, *, pool_min: int, pool_max: int, timeout: float) -> None:
        super().__init__()
        self.dsn = dsn
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._timeout = timeout
        self._pool: asyncpg.Pool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = asyncio.Event()
        self._reconnecting = False
        self._listener: asyncpg.Connection | None = None
        self._next_barrier: asyncio.Future[bool] | None = None
        self._barriers: asyncio.Task[None] | None = None

    def describe(self) -> str:
        parts = urlsplit(self.dsn)
        where = f"{parts.hostname or 'localhost'}" + (f":{parts.port}" if parts.port else "")
        return f"PostgreSQL {parts.path.lstrip('/') or '(default database)'} at {where}"

    async def open(self) -> None:
        """Connect and migrate; if the database is down, start anyway and keep trying."""
        try:
            await self._connect()
        except Exception as error:
            if not _is_unavailable(error):
                raise
            log.warning("PostgreSQL is unreachable (%s); retrying in the background", error)
            self._tasks.append(asyncio.create_task(self._connect_until_done()))

    async def _connect(self) -> None:
        pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self._pool_min,
            max_size=self._pool_max,
            timeout=self._timeout,
            command_timeout=self._timeout,
            reset=_keep_session_state,
            server_settings=SERVER_SETTINGS,
        )
        try:
            async with pool.acquire() as db:
                async with db.transaction():
                    await migrate(db)
                for warning in await _durability_warnings(db):
                    log.warning("%s", warning)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._tasks.append(asyncio.create_task(self._listen(), name="postgres change listener"))
        # Open means other instances' changes are heard from now on.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await self._listening.wait()

    async def _connect_until_done(self) -> None:
        pause = 0.5
        while self._pool is None:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)
            try:
                await self._connect()
            except Exception as error:  # whatever it is, a later try may succeed
                log.warning("PostgreSQL still unreachable: %s", error)
        log.info("PostgreSQL is reachable again")

    async def close(self) -> None:
        # The listener, and a look at other instances' changes still out (its callers hear
        # that nothing could be known).
        for task in [*self._tasks, *([self._barriers] if self._barriers else [])]:
            with contextlib.suppress(Exception):  # its failure was logged where it failed
                await stopped(task)
        if self._pool is not None:
            await self._pool.close()
        self._pool = None

    async def ping(self) -> None:
        await self._run(lambda db: db.fetchval("SELECT 1"))

    async def caught_up(self) -> bool:
        """A query on the listening connection, answered after every notification committed
        before it began (PostgreSQL sends pending notifications before a query's end, and
        asyncpg calls their listeners before the query's caller resumes). Callers arriving
        while one is out share the next, so one is in flight at a time."""
        if self._listener is None:
            return False
        if self._next_barrier is None:
            self._next_barrier = asyncio.get_running_loop().create_future()
            if self._barriers is None:
                self._barriers = asyncio.create_task(self._run_barriers(), name="postgres barriers")
        return await asyncio.shield(self._next_barrier)

    async def _run_barriers(self) -> None:
        barrier: asyncio.Future[bool] | None = None
        try:
            while self._next_barrier is not None:
                barrier, self._next_barrier = self._next_barrier, None
                heard = False
                if self._listener is not None:
                    with contextlib.suppress(Exception):  # the listener reconnects by itself
                        await self._listener.fetchval("SELECT 1", timeout=self._timeout)
                        heard = self._listener is not None
                barrier.set_result(heard)
        finally:
            self._barriers = None
            # Cut short (the store closes): whoever waits cannot know.
            for waiting in (barrier, self._next_barrier):
                if waiting is not None and not waiting.done():
                    waiting.set_result(False)
            self._next_barrier = None

    async def record_webhook(self, delivery: Delivery, update: Update) -> Changed:
        """Two round trips and no transaction block: a read of everything the decision needs,
        then one statement that writes what was decided under the session's lock, unless any
        of that changed meanwhile. Then it is read and decided again holding the lock, so a
        busy session still moves on. Shielded: a client that hangs up cannot cut it short."""
        return await asyncio.shield(self._record_webhook(delivery, update))

    async def _record_webhook(self, delivery: Delivery, update: Update) -> Changed:
        async def locked(db: asyncpg.Connection) -> Changed | None:
            async with db.transaction():
                await _lock(db, delivery.session_id)
                return await _decide_and_write(db, delivery, update, self.emitted)

        changed = await self._run(lambda db: _decide_and_write(db, delivery, update, self.emitted))
        while changed is None:  # only retention deletes a session without its lock: once
            changed = await self._run(locked)
        if changed.after != changed.before:
            self.changes.publish(delivery.session_id)
        return changed

    async def update_session(
        self, session_id: str, update: Update, event: Event | None = None
    ) -> Changed:
        async def work(db: asyncpg.Connection) -> Changed:
            await _lock(db, session_id)
            changed = await _change(db, await _select(db, session_id), update)
            if emitted := self.emitted(changed, sql.recorded_at(changed, event)):
                await db.executemany(POSTGRES.INSERT_DELIVERY, emitted)
            if event is not None and changed.after != changed.before:
                await db.execute(POSTGRES.INSERT_EVENT, *sql.event_row(event))
            return changed

        return await self._transaction(session_id, work)

    async def add_event(self, event: Event) -> None:
        await self._run(lambda db: db.execute(POSTGRES.INSERT_EVENT, *sql.event_row(event)))

    async def add_counted_event(self, event: Event, most: int) -> bool:
        async def work(db: asyncpg.Connection) -> bool:
            async with db.transaction():
                await _lock(db, event.session_id)  # one count at a time per session
                if await db.fetchval(POSTGRES.COUNT_EVENTS, event.session_id, event.kind) >= most:
                    return False
                await db.execute(POSTGRES.INSERT_EVENT, *sql.event_row(event))
                return True

        return await asyncio.shield(self._run(work))

    async def events(self, session_id: str) -> list[Event]:
        rows = await self._run(lambda db: db.fetch(POSTGRES.SELECT_EVENTS, session_id))
        return [sql.event_from_row(tuple(row)) for row in rows]

    async def claim_deliveries(self, now: float, until: float, limit: int) -> list[RelayJob]:
        async def work(db: asyncpg.Connection) -> list[RelayJob]:
            async with db.transaction():
                # The claim must walk the pending deliveries in id order and stop at the
                # limit, whatever PostgreSQL believes of the table: planned afresh each time (a
                # generic plan cached while the table was nearly empty, at a sender's first
                # looks, scanned the whole table for every candidate once thousands were
                # pending), and without sorts (with statistics taken while nothing was pending,
                # the planner sorted every pending delivery for each candidate's session).
                await db.execute(CLAIM_PLANNING)
                rows = await db.fetch(
                    POSTGRES.CLAIM_DELIVERIES_SKIP_LOCKED, until, now, now, now, limit
                )
                jobs = []
                for row in rows:
                    body = row["body"]
                    if body is None:  # the provider's webhook, not one of the bridge's events
                        body = await db.fetchval(
                            POSTGRES.SELECT_BODY, row["webhook_id"], row["session_id"]
                        )
                    if body is None:
                        await db.execute(POSTGRES.FAIL_DELIVERY, row["id"])
                        sql.log_missing_body(tuple(row))
                    else:
                        jobs.append(sql.relay_job(tuple(row), body, until))
                return jobs

        return await self._run(work)

    async def finish_attempts(self, attempts: Sequence[Attempt]) -> list[bool]:
        """One round trip for the batch (migration 13's function), one transaction."""
        if not attempts:
            return []
        values = sql.finish_attempts_values(attempts)
        recorded = await self._run(lambda db: db.fetchval(POSTGRES.FINISH_ATTEMPTS, *values))
        return list(recorded)

    async def deliveries(
        self,
        state: DeliveryState | None,
        limit: int,
        *,
        session_id: str | None = None,
        before: int | None = None,
    ) -> list[DeliveryRecord]:
        statement, values = sql.listing(state, session_id, before, limit)

        async def work(db: asyncpg.Connection) -> list[asyncpg.Record]:
            async with db.transaction():
                # Planned for the values each time: a generic plan, made for any state, reads
                # every row's id newest first and filters by state, the whole table for a rare
                # state such as failed; planned for 'failed', it reads deliveries_by_state.
                await db.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                rows: list[asyncpg.Record] = await db.fetch(sql.numbered(statement), *values)
                return rows

        return [sql.delivery_record(tuple(row)) for row in await self._run(work)]

    async def retry_delivery(self, delivery_id: str, now: float) -> bool | None:
        async def work(db: asyncpg.Connection) -> bool | None:
            if await db.execute(POSTGRES.RETRY_DELIVERY, now, now, now, delivery_id) != "UPDATE 0":
                return True
            return False if await db.fetchval(POSTGRES.DELIVERY_EXISTS, delivery_id) else None

        return await self._run(work)

    async def retry_failed(self, now: float, session_id: str | None = None) -> int:
        async def work(db: asyncpg.Connection) -> str:
            if session_id is None:
                return str(await db.execute(POSTGRES.RETRY_FAILED, now, now, now))
            return str(
                await db.execute(POSTGRES.RETRY_FAILED_OF_SESSION, now, now, now, session_id)
            )

        return int((await self._run(work)).split()[-1])

    async def relay_backlog(self) -> tuple[int, float | None]:
        row = await self._run(lambda db: db.fetchrow(POSTGRES.RELAY_BACKLOG))
        return row[0], row[1]

    async def forget(self, before: float, limit: int, now: float) -> int:
        async def work(db: asyncpg.Connection) -> int:
            gone = 0
            for statement in (
                POSTGRES.FORGET_DELIVERIES,
                POSTGRES.FORGET_WEBHOOKS,
                POSTGRES.FORGET_STEP_HOLDERS,
                POSTGRES.FORGET_HANDOFFS,
            ):
                gone += int((await db.execute(statement, before, limit)).split()[-1])
            async with db.transaction():
                sessions = await db.fetch(POSTGRES.FORGET_SESSIONS, before, limit)
                for row in sessions:
                    await _announce(db, row["session_id"])
                await db.executemany(
                    POSTGRES.INSERT_EVENT, [sql.forgotten_event(row, now) for row in sessions]
                )
            return gone + len(sessions)

        return await self._run(work)

    async def hold_step(self, session_id: str, page: str, at: float, *, take: bool) -> bool:
        if take:
            await self._run(lambda db: db.execute(POSTGRES.TAKE_STEP, session_id, page, at))
            return True

        async def work(db: asyncpg.Connection) -> bool:
            holder = await db.fetchval(POSTGRES.SELECT_STEP_HOLDER, session_id)
            if holder is not None:  # a page asking again whether it holds the step: no write
                return bool(holder == page)
            return await db.fetchval(POSTGRES.HOLD_STEP, session_id, page, at) is not None

        return await self._run(work)

    async def add_handoff(self, handoff: Handoff) -> None:
        await self._run(lambda db: db.execute(POSTGRES.INSERT_HANDOFF, *sql.handoff_row(handoff)))

    async def handoff(self, digest: bytes) -> Handoff | None:
        row = await self._run(lambda db: db.fetchrow(POSTGRES.SELECT_HANDOFF, digest))
        return sql.handoff_from_row(None if row is None else tuple(row))

    async def claim_handoff(self, digest: bytes, page: str, now: float) -> Handoff | None:
        async def work(db: asyncpg.Connection) -> Handoff | None:
            async with db.transaction():
                row = await db.fetchrow(POSTGRES.CLAIM_HANDOFF, now, digest, now)
                claimed = sql.handoff_from_row(None if row is None else tuple(row))
                if claimed is not None:
                    await db.execute(POSTGRES.TAKE_STEP, claimed.session_id, page, now)
                    await db.execute(
                        POSTGRES.INSERT_EVENT, *sql.event_row(sql.handoff_event(claimed))
                    )
                return claimed

        return await self._run(work)

    async def bank(self, origin: str) -> BankRecord | None:
        row = await self._run(lambda db: db.fetchrow(POSTGRES.SELECT_BANK, origin))
        return sql.bank_from_row(None if row is None else tuple(row))

    async def claim_bank_look(self, origin: str, now: float, since: float) -> bool:
        claimed = await self._run(
            lambda db: db.fetchval(POSTGRES.CLAIM_BANK_LOOK, origin, now, since)
        )
        return claimed is not None

    async def record_bank_look(self, origin: str, headers: Frames | None) -> None:
        await self._run(lambda db: db.execute(POSTGRES.RECORD_BANK_LOOK, headers, origin))

    async def count_bank_steps(self, origin: str, steps: BankSteps) -> None:
        row = sql.bank_steps_row(origin, steps)
        await self._run(lambda db: db.execute(POSTGRES.COUNT_BANK_STEPS, *row))

    async def forgotten(self, session_id: str) -> Forgotten | None:
        return sql.forgotten_from_row(
            await self._run(lambda db: db.fetchrow(POSTGRES.SELECT_FORGOTTEN, session_id))
        )

    async def get_session(self, session_id: str) -> Session | None:
        return await self._run(lambda db: _select(db, session_id))

    async def sessions_due(self, now: float, limit: int = 500) -> list[str]:
        rows = await self._run(
            lambda db: db.fetch(
                POSTGRES.SESSIONS_DUE,
                Status.ACTION_REQUIRED.value,
                now,
                limit,
            )
        )
        return [row["session_id"] for row in rows]

    async def _transaction(
        self, session_id: str, work: Callable[[asyncpg.Connection], Awaitable[Changed]]
    ) -> Changed:
        # Shielded: a client that hangs up cannot cut a transaction short.
        return await asyncio.shield(self._commit_and_publish(session_id, work))

    async def _commit_and_publish(
        self, session_id: str, work: Callable[[asyncpg.Connection], Awaitable[Changed]]
    ) -> Changed:
        async def transaction(db: asyncpg.Connection) -> Changed:
            async with db.transaction():
                changed = await work(db)
                if changed.after != changed.before:
                    await _announce(db, session_id)
                return changed

        changed = await self._run(transaction)
        if changed.after != changed.before:
            self.changes.publish(session_id)  # this instance's waiters need not wait for NOTIFY
        return changed

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        if self._pool is None:
            raise StorageUnavailableError("not connected to PostgreSQL yet")
        try:
            async with self._pool.acquire(timeout=self._timeout) as db:
                return await work(db)
        except Exception as error:
            if _is_unavailable(error):
                raise StorageUnavailableError(str(error) or type(error).__name__) from error
            raise

    async def _listen(self) -> None:
        """Hear every instance's changes, on one connection kept alive for the purpose.

        Nothing but cancellation ends this loop: a listener that died would leave this
        instance's waiters deaf to every other instance.
        """
        pause = 0.5
        while True:
            try:
                db = await asyncpg.connect(self.dsn, timeout=self._timeout)
            except Exception as error:
                log.warning("cannot open the PostgreSQL change listener: %s", error)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 10.0)
                continue
            pause = 0.5
            try:
                await self._follow(db)
            except Exception as error:
                log.warning("lost the PostgreSQL change listener (%s); reconnecting", error)
            finally:
                with contextlib.suppress(Exception):
                    await db.close(timeout=1)

    async def _follow(self, db: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        db.add_termination_listener(lambda _: lost.set())
        await db.add_listener(CHANNEL, self._heard)
        self._listener = db
        self._listening.set()
        if self._reconnecting:
            self.changes.publish_all()  # news may have been missed while not listening
        self._reconnecting = True
        try:
            while not lost.is_set():
                try:
                    async with asyncio.timeout(10):
                        await lost.wait()
                except TimeoutError:  # a quiet line: make sure it is still there
                    if not await self.caught_up():
                        return
        finally:
            self._listener = None
            self._listening.clear()

    def _heard(self, _db: object, _pid: int, _channel: str, session_id: str) -> None:
        self.changes.publish(session_id)


async def migrate(db: asyncpg.Connection) -> None:
    """Bring the schema up to date; instances starting together take turns."""
    await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
    await db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    await _share_numbering(db)
    version = await db.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
    for number, migration in enumerate(migrations.MIGRATIONS[version:], start=version + 1):
        if migration.postgres:  # else there is nothing to run (nor can asyncpg run nothing)
            await db.execute(migration.postgres)
        if number == migrations.DATED:
            await _date_sessions(db)
        await db.execute(
            "INSERT INTO schema_version (version, numbering) VALUES ($1, $2)", number, _SHARED
        )


async def _share_numbering(db: asyncpg.Connection) -> None:
    """Renumber, once, the versions recorded in PostgreSQL's own numbering, from before both
    engines shared one: each row says which numbering it is in, and one that says none is in
    PostgreSQL's own (see :data:`.migrations.POSTGRES_OWN_NUMBERS`)."""
    await db.execute("ALTER TABLE schema_version ADD COLUMN IF NOT EXISTS numbering TEXT")
    await db.executemany(
        "UPDATE schema_version SET version = $2, numbering = $3"
        " WHERE version = $1 AND numbering IS NULL",
        [
            (own, shared, _SHARED)
            for own, shared in enumerate(migrations.POSTGRES_OWN_NUMBERS, start=1)
        ],
    )


async def _date_sessions(db: asyncpg.Connection) -> None:
    for session_id, status in await db.fetch(migrations.UNDATED_SESSIONS):
        bodies = [
            row[0] for row in await db.fetch(sql.numbered(migrations.SESSION_BODIES), session_id)
        ]
        dated = migrations.provider_clock(status, bodies)
        await db.execute(sql.numbered(migrations.DATE_SESSION), *dated, session_id)


async def _announce(db: asyncpg.Connection, session_id: str) -> None:
    """Tell every instance the session changed, once this transaction commits."""
    await db.execute("SELECT pg_notify($1, $2)", CHANNEL, session_id)


async def _lock(db: asyncpg.Connection, session_id: str) -> None:
    await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", session_id)


async def _decide_and_write(
    db: asyncpg.Connection,
    delivery: Delivery,
    update: Update,
    emitted: Callable[[Changed, float], list[tuple[Any, ...]]],
) -> Changed | None:
    """Read what deciding ``delivery`` needs, decide, write: the change, or ``None`` (nothing
    written) when another write to the session came between the read and the write."""
    news = sql.WebhookNews.from_row(
        tuple(
            await db.fetchrow(
                POSTGRES.WEBHOOK_NEWS, delivery.meaning, delivery.digest, delivery.session_id
            )
        )
    )
    session = news.session
    if session is None and news.forgotten and news.forgotten.replayed(delivery):
        return Changed(before=None, after=None, ignored=True)
    if news.duplicate or news.same_meaning:
        changed = Changed(before=session, after=session, duplicate=news.duplicate)
    else:
        changed = Changed(before=session, after=update(session))
    row = sql.record_webhook_row(
        news, delivery, changed, emitted(changed, delivery.received_at), CHANNEL
    )
    return changed if await db.fetchval(POSTGRES.RECORD_WEBHOOK, *row) else None


async def _select(db: asyncpg.Connection, session_id: str) -> Session | None:
    row = await db.fetchrow(POSTGRES.SELECT_SESSION, session_id)
    return sql.session_from_row(None if row is None else tuple(row))


async def _change(db: asyncpg.Connection, before: Session | None, update: Update) -> Changed:
    """``before``: the session as this transaction read it."""
    after = update(before)
    if after is not None and after != before:
        await db.execute(POSTGRES.UPSERT_SESSION, *sql.session_row(after))
    return Changed(before=before, after=after)
