"""A partner recovering from an outage: the deliveries listed and paged, failed ones put back in
line in their sessions' order, and a partner that asks for a pause (Retry-After) given it."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, TypeVar

import asyncpg
import pytest

from app.relay import next_attempt, retry_after
from app.store import sql

from .conftest import Configured, Deployment, FakeClock
from .database import open_store, query
from .partner import Partner, recording_partner
from .payloads import webhook
from .test_relay import deliver, relay_of

T = TypeVar("T")
DELIVERIES = "/api/v1/relay/deliveries"


@pytest.fixture
def partner_backend() -> Any:
    with recording_partner() as backend:
        yield backend


async def until(check: Callable[[], Awaitable[T]], what: str) -> T:
    """``check()``'s answer once it is truthy (the relay works on its own meanwhile)."""
    for _ in range(200):
        if answer := await check():
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError(what)


async def listed(bridge: Deployment, **query_string: Any) -> dict[str, Any]:
    answer = await bridge.client.get(
        DELIVERIES, query_string=query_string, headers=bridge.partner.headers
    )
    assert answer.status_code == 200, await answer.get_data(as_text=True)
    listing: dict[str, Any] = await answer.get_json()
    return listing


async def in_state(bridge: Deployment, state: str) -> list[Any]:
    """The store's own listing, as it answered before the API took every state."""
    return list(await bridge.app.extensions["bridge"].store.deliveries(state, 1000))


async def attempted_pending(bridge: Deployment) -> list[Any]:
    """The pending deliveries, once the first of them was tried."""
    pending = await in_state(bridge, "pending")
    return pending if pending and pending[0].attempts else []


async def send(bridge: Deployment, session_id: str, kind: str, number: int) -> None:
    """A webhook of its own bytes (``number`` in its body), accepted and so relayed."""
    stamp = f"2027-01-15T07:{number // 60:02d}:{number % 60:02d}Z"
    await deliver(bridge, webhook(kind, session_id, updated_at=stamp, number=number))


async def fail_for_good(bridge: Deployment, clock: FakeClock, count: int) -> list[Any]:
    """Move the bridge's clock past the maximum age (60 s in these tests) until ``count``
    deliveries failed for good; they are answered newest first."""
    for _ in range(20):
        clock.advance(61)
        relay_of(bridge).wake()
        await asyncio.sleep(0.2)
        failed = await in_state(bridge, "failed")
        if len(failed) >= count:
            return failed
    raise AssertionError(f"{len(await in_state(bridge, 'failed'))} failed, not {count}")


def sent(partner: Partner, since: int = 0) -> list[tuple[str, str]]:
    """(session, type) of what the partner received, in order of arrival."""
    bodies = [json.loads(item.body) for item in partner.received[since:]]
    return [(body["session"]["id"], body["type"]) for body in bodies]


# -- the listing -----------------------------------------------------------------------------


async def test_the_list_holds_every_state_unless_one_is_named(
    configured: Configured, partner_backend: Partner, clock: FakeClock
) -> None:
    """No ``state`` is every state (it quietly meant ``pending``); ``state`` and
    ``session_id`` filter, and together."""
    partner_backend.answer = lambda received: 500
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=60) as bridge:
        await send(bridge, "ps_failed", "ready_to_confirm", 1)
        await fail_for_good(bridge, clock, 1)
        partner_backend.answer = lambda received: 200 if b'"ps_delivered"' in received.body else 500
        await send(bridge, "ps_delivered", "ready_to_confirm", 2)
        await send(bridge, "ps_pending", "ready_to_confirm", 3)
        await until(lambda: in_state(bridge, "delivered"), "ps_delivered delivered")
        await until(lambda: attempted_pending(bridge), "an attempt of ps_pending")
        everything = (await listed(bridge))["deliveries"]
        assert [(item["session_id"], item["state"]) for item in everything] == [
            ("ps_pending", "pending"),
            ("ps_delivered", "delivered"),
            ("ps_failed", "failed"),
        ]
        assert (await listed(bridge))["next_cursor"] is None
        for state in ("pending", "failed", "delivered"):
            only = (await listed(bridge, state=state))["deliveries"]
            assert [item["session_id"] for item in only] == [f"ps_{state}"]
        mine = (await listed(bridge, session_id="ps_failed"))["deliveries"]
        assert [item["state"] for item in mine] == ["failed"]
        assert (await listed(bridge, session_id="ps_failed", state="delivered"))["deliveries"] == []
        assert (await listed(bridge, session_id="ps_unknown"))["deliveries"] == []


async def test_paging_reaches_every_delivery_while_new_ones_arrive(
    configured: Configured, partner_backend: Partner
) -> None:
    """Pages follow one another by a cursor, not an offset: deliveries that arrive between two
    pages push nothing into the next one twice, and nothing is skipped."""
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        for number in range(23):
            await send(bridge, f"ps_{number % 4}", "ready_to_confirm", number)
        await partner_backend.arrived(23)
        seen: list[str] = []
        page = await listed(bridge, limit=5)
        everything_then = [item["id"] for item in (await listed(bridge, limit=500))["deliveries"]]
        arrived = 23
        while True:
            seen += [item["id"] for item in page["deliveries"]]
            assert len(page["deliveries"]) <= 5
            if page["next_cursor"] is None:
                break
            assert isinstance(page["next_cursor"], str)
            # Newer deliveries arrive between pages; they are at the top, not in the next page.
            await send(bridge, "ps_new", "ready_to_confirm", 100 + arrived)
            arrived += 1
            page = await listed(bridge, limit=5, cursor=page["next_cursor"])
        assert seen == everything_then  # each once, newest first, the last page short
        assert len(seen) == 23
        top = (await listed(bridge, limit=500))["deliveries"]
        assert len(top) == arrived and [item["id"] for item in top[-23:]] == seen
        # The last page is the last even when it is full.
        first = await listed(bridge, limit=arrived - 23)
        last = await listed(bridge, limit=23, cursor=first["next_cursor"])
        assert len(last["deliveries"]) == 23 and last["next_cursor"] is None


async def test_paging_with_filters_and_the_default_page(
    configured: Configured, partner_backend: Partner
) -> None:
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        for number in range(101):
            await send(bridge, "ps_busy" if number % 2 else "ps_quiet", "ready_to_confirm", number)
        await partner_backend.arrived(101)
        await until(lambda: _delivered_count(bridge, 101), "101 delivered")
        first = await listed(bridge)
        assert len(first["deliveries"]) == 100 and first["next_cursor"] is not None
        rest = await listed(bridge, cursor=first["next_cursor"])
        assert len(rest["deliveries"]) == 1 and rest["next_cursor"] is None
        busy: list[str] = []
        cursor = None
        while True:
            page = await listed(
                bridge,
                session_id="ps_busy",
                state="delivered",
                limit=7,
                **({"cursor": cursor} if cursor else {}),
            )
            busy += [item["id"] for item in page["deliveries"]]
            assert {item["session_id"] for item in page["deliveries"]} <= {"ps_busy"}
            if (cursor := page["next_cursor"]) is None:
                break
        everything = first["deliveries"] + rest["deliveries"]
        assert busy == [item["id"] for item in everything if item["session_id"] == "ps_busy"]
        assert len(busy) == 50


async def _delivered_count(bridge: Deployment, count: int) -> bool:
    return len(await in_state(bridge, "delivered")) == count


def _cursor_of(row_id: int) -> str:
    """A cursor as the API makes them: 8 bytes, big-endian, unpadded base64url."""
    return base64.urlsafe_b64encode(row_id.to_bytes(8, "big")).decode().rstrip("=")


@pytest.mark.parametrize(
    "query_string",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"state": "lost"},
        {"cursor": "!!!"},
        {"cursor": ""},
        {"cursor": "x" * 40},
        {"cursor": _cursor_of(5)[:-1]},
        {"cursor": _cursor_of(5) + "A"},
        {"cursor": _cursor_of(5) + "\n"},
        {"cursor": _cursor_of(5)[:-1] + "B"},  # bits past the 8 bytes
        {"cursor": _cursor_of(2**63)},  # past PostgreSQL's bigint
        {"cursor": _cursor_of(2**64 - 1)},
        {"session_id": "a b"},
        {"session_id": "nul\x00"},
        {"session_id": "x" * 257},
    ],
)
async def test_a_bad_listing_is_a_400_in_the_error_shape(
    configured: Configured, partner_backend: Partner, query_string: dict[str, str]
) -> None:
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        await send(bridge, "ps_1", "ready_to_confirm", 1)
        answer = await bridge.client.get(
            DELIVERIES, query_string=query_string, headers=bridge.partner.headers
        )
        assert answer.status_code == 400, await answer.get_data(as_text=True)
        error = (await answer.get_json())["error"]
        assert set(error) == {"code", "message"} and error["code"] and error["message"]


async def test_every_listing_and_retry_reads_an_index(database_url: str) -> None:
    """Each form of the listing (any of state, session and cursor) and of the retries reads an
    index, newest first, on a table of many deliveries, most delivered: no whole table read, no
    sort but of a few rows (one session's, or the pending ones while there are few)."""
    store = open_store(database_url)
    await store.open()
    await store.close()
    numbers = (
        "generate_series(0, 19999) n"
        if database_url.startswith("postgres")
        else "(WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 19999)"
        " SELECT n FROM g)"
    )
    await query(
        database_url,
        "INSERT INTO deliveries (message_id, session_id, type, received_at, state, attempts,"
        " next_attempt_at, retry_from) SELECT 'msg_' || n, 'ps_' || (n / 4), 't', 1.0,"
        " CASE WHEN n % 997 = 0 THEN 'pending' WHEN n % 101 = 0 THEN 'failed'"
        f" ELSE 'delivered' END, 1, 1.0, 1.0 FROM {numbers}",
    )
    await query(database_url, "ANALYZE")
    listings = [
        sql.listing(state, session_id, before, 101)
        for state in (None, "pending", "failed", "delivered")
        for session_id in (None, "ps_77")
        for before in (None, 15_000)
    ]
    retries = [
        (sql.RETRY_DELIVERY, (2.0, 2.0, 2.0, "msg_303")),
        (sql.RETRY_FAILED, (2.0, 2.0, 2.0)),
        (sql.RETRY_FAILED_OF_SESSION, (2.0, 2.0, 2.0, "ps_75")),
    ]
    # PostgreSQL plans each listing for its values (PostgresStore.deliveries); the retries may
    # run on a generic plan too.
    for statements, modes in ((listings, ["custom"]), (retries, ["custom", "generic"])):
        for statement, values in statements:
            for plan in await plans(database_url, statement, values, modes):
                assert "Seq Scan" not in plan, (statement, plan)
                if "WHERE" in statement:
                    assert not re.search(r"^SCAN deliveries$", plan, re.M), (statement, plan)
                one_session = re.search(r"\(session_id=\?|Index Cond: \(+session_id = ", plan)
                assert one_session or "TEMP B-TREE" not in plan, (statement, plan)
                for rows in re.findall(r"Sort  \(cost=\S+ rows=(\d+)", plan):
                    assert int(rows) <= 1000, (statement, plan)


async def plans(
    database_url: str, statement: str, values: tuple[Any, ...], modes: list[str]
) -> list[str]:
    """How the database would run ``statement``: SQLite's plan; PostgreSQL's in each mode, as a
    prepared statement is planned (for the values given, or for any)."""
    if database_url.startswith("sqlite"):
        found = await query(database_url, _inline("EXPLAIN QUERY PLAN " + statement, values))
        return ["\n".join(str(row[-1]) for row in found)]
    db = await asyncpg.connect(database_url)
    try:
        texts = []
        for mode in modes:
            await db.execute(f"SET plan_cache_mode = force_{mode}_plan")
            await db.execute(f"PREPARE listing AS {sql.numbered(statement)}")
            arguments = ", ".join(_literal(value) for value in values)
            found = await db.fetch(f"EXPLAIN EXECUTE listing({arguments})")
            texts.append("\n".join(row[0] for row in found))
            await db.execute("DEALLOCATE listing")
        return texts
    finally:
        await db.close()


def _literal(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else repr(value)


def _inline(statement: str, values: tuple[Any, ...]) -> str:
    head, *rest = statement.split("?")
    return head + "".join(_literal(value) + text for value, text in zip(values, rest, strict=True))


# -- retrying one ----------------------------------------------------------------------------


async def test_retrying_one_delivery_sends_the_earlier_failed_ones_of_its_session_first(
    configured: Configured, partner_backend: Partner, clock: FakeClock
) -> None:
    """The finding: two failed deliveries of one session, 38 then 39; retrying 39 alone sent it
    and left 38 failed, so the partner saw the session's webhooks out of order. Retrying 39
    puts 38 back in line too, ahead of it; a later failed one and another session's stay."""
    partner_backend.answer = lambda received: 500
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=60) as bridge:
        await send(bridge, "ps_1", "ready_to_confirm", 1)  # 38
        await send(bridge, "ps_1", "action_required", 2)  # 39
        await send(bridge, "ps_1", "payment_finished", 3)  # later: stays failed
        await send(bridge, "ps_2", "ready_to_confirm", 4)  # another session's: stays failed
        failed = await fail_for_good(bridge, clock, 4)
        by_type = {(record.session_id, record.type): record.id for record in failed}
        partner_backend.answer = lambda received: 200
        before = len(partner_backend.received)
        path = f"{DELIVERIES}/{by_type[('ps_1', 'action_required')]}/retry"
        answer = await bridge.client.post(path, headers=bridge.partner.headers)
        assert answer.status_code == 202
        await partner_backend.arrived(before + 1)
        await asyncio.sleep(0.5)
        assert sent(partner_backend, before) == [
            ("ps_1", "ready_to_confirm"),
            ("ps_1", "action_required"),
        ]
        still = {(record.session_id, record.type) for record in await in_state(bridge, "failed")}
        assert still == {("ps_1", "payment_finished"), ("ps_2", "ready_to_confirm")}
        # Not failed any more: 409, and the earlier ones are left as they are.
        assert (await bridge.client.post(path, headers=bridge.partner.headers)).status_code == 409


async def test_retrying_one_that_is_not_failed_puts_nothing_back(
    configured: Configured, partner_backend: Partner, clock: FakeClock
) -> None:
    """A 409 changes nothing, even with failed deliveries before it in its session."""
    partner_backend.answer = lambda received: 500
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=60) as bridge:
        await send(bridge, "ps_1", "ready_to_confirm", 1)
        await fail_for_good(bridge, clock, 1)
        partner_backend.answer = lambda received: 200
        await send(bridge, "ps_1", "action_required", 2)
        (delivered,) = await until(lambda: in_state(bridge, "delivered"), "delivered")
        path = f"{DELIVERIES}/{delivered.id}/retry"
        assert (await bridge.client.post(path, headers=bridge.partner.headers)).status_code == 409
        await asyncio.sleep(0.3)
        assert [record.type for record in await in_state(bridge, "failed")] == ["ready_to_confirm"]
        unknown = f"{DELIVERIES}/msg_01KBX5W3G1C9N2T7QJ8Y4F6R0D/retry"
        assert (
            await bridge.client.post(unknown, headers=bridge.partner.headers)
        ).status_code == 404


# -- retrying all ----------------------------------------------------------------------------


async def test_after_an_outage_one_call_sends_every_session_its_messages_in_order(
    configured: Configured, partner_backend: Partner, clock: FakeClock
) -> None:
    """The partner was down past the maximum age (a day-long outage, here a minute): every
    delivery failed. One call puts them all back in line; each session's arrive in the order
    received."""
    flow = ["ready_to_confirm", "action_required", "ready_to_capture", "payment_finished"]
    partner_backend.answer = lambda received: 503
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=60) as bridge:
        number = 0
        for kind in flow:
            for session_id in ("ps_a", "ps_b", "ps_c"):
                number += 1
                await send(bridge, session_id, kind, number)
        await fail_for_good(bridge, clock, 12)
        partner_backend.answer = lambda received: 200
        before = len(partner_backend.received)
        answer = await bridge.client.post(
            f"{DELIVERIES}/retry", json={}, headers=bridge.partner.headers
        )
        assert answer.status_code == 202
        assert await answer.get_json() == {"requeued": 12}
        await partner_backend.arrived(before + 12)
        arrived = sent(partner_backend, before)
        for session_id in ("ps_a", "ps_b", "ps_c"):
            assert [kind for session, kind in arrived if session == session_id] == flow
        await until(lambda: _delivered_count(bridge, 12), "all 12 delivered")
        assert await in_state(bridge, "failed") == []
        again = await bridge.client.post(
            f"{DELIVERIES}/retry", json={}, headers=bridge.partner.headers
        )
        assert await again.get_json() == {"requeued": 0}


async def test_retrying_all_of_one_session(
    configured: Configured, partner_backend: Partner, clock: FakeClock
) -> None:
    partner_backend.answer = lambda received: 500
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=60) as bridge:
        await send(bridge, "ps_a", "ready_to_confirm", 1)
        await send(bridge, "ps_a", "action_required", 2)
        await send(bridge, "ps_b", "ready_to_confirm", 3)
        await fail_for_good(bridge, clock, 3)
        partner_backend.answer = lambda received: 200
        before = len(partner_backend.received)
        answer = await bridge.client.post(
            f"{DELIVERIES}/retry", json={"session_id": "ps_a"}, headers=bridge.partner.headers
        )
        assert answer.status_code == 202 and await answer.get_json() == {"requeued": 2}
        await partner_backend.arrived(before + 2)
        await asyncio.sleep(0.3)
        assert sent(partner_backend, before) == [
            ("ps_a", "ready_to_confirm"),
            ("ps_a", "action_required"),
        ]
        assert [record.session_id for record in await in_state(bridge, "failed")] == ["ps_b"]
        nobody = await bridge.client.post(
            f"{DELIVERIES}/retry", json={"session_id": "ps_none"}, headers=bridge.partner.headers
        )
        assert nobody.status_code == 202 and await nobody.get_json() == {"requeued": 0}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 202),  # no body is {}
        (b"{}", 202),
        (b"not json", 400),
        (b"[]", 422),
        (b'{"session_id": 5}', 422),
        (b'{"session_id": "a b"}', 422),
        (b'{"session_id": "nul\\u0000"}', 422),
        (b'{"session": "ps_1"}', 422),
    ],
)
async def test_the_retry_all_body(
    configured: Configured, partner_backend: Partner, body: bytes, status: int
) -> None:
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        path = f"{DELIVERIES}/retry"
        assert (await bridge.client.post(path, data=body)).status_code == 401
        answer = await bridge.client.post(
            path,
            data=body,
            headers={**bridge.partner.headers, "Content-Type": "application/json"},
        )
        assert answer.status_code == status, await answer.get_data(as_text=True)
        if status == 202:
            assert await answer.get_json() == {"requeued": 0}
        else:
            assert set((await answer.get_json())["error"]) == {"code", "message"}


# -- Retry-After and redirects ---------------------------------------------------------------


async def next_attempt_of(database_url: str) -> tuple[float, float, str]:
    [(due, last, state)] = await query(
        database_url, "SELECT next_attempt_at, last_attempt_at, state FROM deliveries"
    )
    return due, last, state


@pytest.mark.parametrize(
    ("status", "header", "pause"),
    [
        (503, "120", 120.0),
        (429, "300", 300.0),
        (503, "date+200", 200.0),
        (429, "99999999", 600.0),  # at most BRIDGE_RELAY_MAX_DELAY
    ],
)
async def test_a_partner_that_asks_for_a_pause_gets_it(
    configured: Configured,
    partner_backend: Partner,
    clock: FakeClock,
    database_url: str,
    status: int,
    header: str,
    pause: float,
) -> None:
    if header.startswith("date+"):
        moment = datetime.fromtimestamp(clock.now + int(header[5:]), UTC)
        header = format_datetime(moment, usegmt=True)
    partner_backend.answer = lambda received: status if len(partner_backend.received) < 1 else 200
    partner_backend.headers = lambda received: {"Retry-After": header}
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=3600) as bridge:
        await send(bridge, "ps_1", "ready_to_confirm", 1)
        await partner_backend.arrived(1)
        await until(lambda: _attempted(database_url), "the first attempt on record")
        due, last, state = await next_attempt_of(database_url)
        assert state == "pending"
        assert due - last == pytest.approx(pause, abs=1.0)
        clock.advance(pause - 5)  # well past the usual pause, not past the one asked for
        relay_of(bridge).wake()
        await asyncio.sleep(0.3)
        assert len(partner_backend.received) == 1
        clock.advance(10)
        relay_of(bridge).wake()
        await partner_backend.arrived(2)


async def _attempted(database_url: str) -> bool:
    [(attempts,)] = await query(database_url, "SELECT attempts FROM deliveries")
    return bool(attempts)


async def test_a_pause_asked_for_past_the_maximum_age_fails_the_delivery(
    configured: Configured, partner_backend: Partner, database_url: str
) -> None:
    partner_backend.answer = lambda received: 503
    partner_backend.headers = lambda received: {"Retry-After": "500"}
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=300) as bridge:
        await send(bridge, "ps_1", "ready_to_confirm", 1)
        (failed,) = await until(lambda: in_state(bridge, "failed"), "failed for good")
        assert failed.attempts == 1 and failed.last_status == 503


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_a_failure_and_never_followed(
    configured: Configured, partner_backend: Partner, clock: FakeClock, status: int
) -> None:
    with recording_partner() as elsewhere:
        partner_backend.answer = lambda received: status
        partner_backend.headers = lambda received: {"Location": elsewhere.url}
        async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=600) as bridge:
            await send(bridge, "ps_1", "ready_to_confirm", 1)
            await partner_backend.arrived(1)
            (pending,) = await until(
                lambda: attempted_pending(bridge), "the first attempt on record"
            )
            assert pending.last_status == status and pending.attempts == 1
            clock.advance(5)  # past the first pause: tried again, at the same URL
            relay_of(bridge).wake()
            await partner_backend.arrived(2)
            await asyncio.sleep(0.2)
        assert elsewhere.received == []


@pytest.mark.parametrize(
    ("status", "value", "seconds"),
    [
        (503, "120", 120.0),
        (429, " 7 ", 7.0),
        (503, "0", 0.0),
        (503, "Fri, 15 Jan 2027 08:02:00 GMT", 120.0),  # IMF-fixdate
        (503, "Friday, 15-Jan-27 08:02:00 GMT", 120.0),  # RFC 850
        (503, "Fri Jan 15 08:02:00 2027", 120.0),  # asctime
        (503, "Fri, 15 Jan 2027 07:00:00 GMT", 0.0),  # past
        (503, "soon", 0.0),
        (503, "-5", 0.0),
        (503, "1.5", 0.0),
        (503, "١٢٠", 0.0),  # digits, but not ASCII ones
        (503, "9" * 5000, 1e12),  # longer than int() takes: as long as there is
        (503, None, 0.0),
        (500, "120", 0.0),  # only a 429 or 503 asks for a pause
        (200, "120", 0.0),
        (None, "120", 0.0),
    ],
)
def test_retry_after_is_read_as_http_says(
    status: int | None, value: str | None, seconds: float
) -> None:
    now = datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()
    assert retry_after(status, value, now) == seconds


def test_a_pause_asked_for_is_kept_within_the_longest_pause_and_the_maximum_age() -> None:
    common = {"retry_from": 0.0, "now": 100.0, "max_delay": 600.0, "jitter": 0.0}
    assert next_attempt(attempts=1, max_age=10**6, at_least=120.0, **common) == 220.0
    assert next_attempt(attempts=1, max_age=10**6, at_least=10**9, **common) == 700.0
    assert next_attempt(attempts=1, max_age=10**6, at_least=0.0, **common) == 100.5
    # The usual pause is longer than the one asked for: it stands.
    assert next_attempt(attempts=11, max_age=10**6, at_least=10.0, **common) == 400.0
    assert next_attempt(attempts=1, max_age=200.0, at_least=120.0, **common) is None


# -- failed for good, as the alert counts it -------------------------------------------------


@pytest.mark.parametrize("outcome", ["claim lost", "storage unavailable"])
async def test_only_a_failure_on_record_counts_as_failed_for_good(
    configured: Configured, partner_backend: Partner, outcome: str
) -> None:
    """bridge_relay_attempts_total{outcome="failed"} pages someone (docs/deploy's alerts): an
    attempt whose outcome was not recorded (its claim lost to another process, the storage
    away) is tried again, so it counts as pending, not as failed for good."""
    from app.store import StorageUnavailableError

    partner_backend.answer = lambda received: 503
    partner_backend.headers = lambda received: {"Retry-After": "3"}  # past the maximum age
    async with configured(
        RELAY_URL=partner_backend.url, RELAY_TIMEOUT=1, RELAY_MAX_AGE=2
    ) as bridge:
        store = bridge.app.extensions["bridge"].store
        told: list[Any] = []

        async def not_recorded(attempts: list[Any]) -> list[bool]:
            told.extend(attempts)
            if outcome == "storage unavailable":
                raise StorageUnavailableError("gone")
            return [False] * len(attempts)

        store.finish_attempts = not_recorded
        await send(bridge, "ps_1", "ready_to_confirm", 1)
        await until(lambda: asyncio.sleep(0, told), "an attempt told")
        assert told[0].state == "failed"
        text = await (await bridge.client.get("/metrics")).get_data(as_text=True)
        assert 'bridge_relay_attempts_total{outcome="failed"} 0.0' in text
        assert 'bridge_relay_attempts_total{outcome="pending"} 1.0' in text
