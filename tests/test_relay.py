"""The relay against a real recording partner on loopback, in the app's own process."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.relay import CLAIM_MARGIN, FINAL_WRITE, next_attempt
from app.signature import sign
from app.store import Attempt, DeliveryState, StorageUnavailableError, Store, migrations, sql
from app.store.postgres import CLAIM_PLANNING, SERVER_SETTINGS

from .conftest import RELAY_SECRET, Configured, Deployment, FakeClock
from .database import open_store, query
from .partner import Partner, Received, recording_partner
from .payloads import webhook
from .postgres import PostgresServer


@pytest.fixture
def partner_backend() -> Iterator[Partner]:
    with recording_partner() as backend:
        yield backend


@pytest.fixture
async def relaying(configured: Configured, partner_backend: Partner) -> AsyncIterator[Deployment]:
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=600) as bridge:
        yield bridge


async def relay_events(bridge: Deployment, count: int) -> list[dict[str, Any]]:
    """The session's relay history, once it holds ``count`` attempts (each is written once the
    partner's answer is in)."""
    relays: list[dict[str, Any]] = []
    for _ in range(200):
        answer = await bridge.client.get(
            "/api/v1/sessions/ps_1/events", headers=bridge.partner.headers
        )
        events = (await answer.get_json())["events"]
        relays = [event for event in events if event["kind"] == "relay"]
        if len(relays) >= count:
            return relays
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(relays)} relay attempts in the history, not {count}")


def relay_of(bridge: Deployment) -> Any:
    return bridge.app.extensions["bridge"].relay


async def deliver(bridge: Deployment, payload: dict[str, Any] | bytes) -> tuple[bytes, str]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signature = sign(bridge.provider.key, body)
    answer = await bridge.provider.send(body, signature=signature)
    assert answer.status_code == 200
    return body, signature


async def test_every_accepted_webhook_is_relayed_byte_for_byte_with_its_signature(
    relaying: Deployment, partner_backend: Partner
) -> None:
    # Bytes as the provider serialises them: odd spacing and escapes must survive.
    body = b'{"type": "ready_to_confirm",  "session": {"id": "ps_1", "note": "\\u00e9"}}'
    _, signature = await deliver(relaying, body)
    (received,) = await partner_backend.arrived(1)
    assert received.body == body
    assert received.headers["x-partner-sign"] == signature
    assert received.headers["content-type"] == "application/json"
    assert received.headers["x-bridge-attempt"] == "1"
    assert received.headers["x-bridge-delivery-id"] == received.headers["webhook-id"]
    assert re.fullmatch(r"msg_[0-9A-HJKMNP-TV-Z]{26}", received.headers["webhook-id"])
    assert received.path == "/smart-glocal"
    # What a partner's Standard Webhooks library makes of it: the bytes, verified.
    assert Webhook(RELAY_SECRET).verify(received.body, received.headers, json_parse=False) is None


async def test_a_duplicate_is_not_relayed_again(
    relaying: Deployment, partner_backend: Partner
) -> None:
    payload = webhook("ready_to_confirm", updated_at="2027-01-15T07:00:00Z")
    await deliver(relaying, payload)
    await deliver(relaying, payload)  # the same bytes again: "duplicate"
    await deliver(relaying, webhook("action_required", updated_at="2027-01-15T07:01:00Z"))
    received = await partner_backend.arrived(2)
    await asyncio.sleep(0.3)
    assert len(partner_backend.received) == 2
    assert [json.loads(item.body)["type"] for item in received] == [
        "ready_to_confirm",
        "action_required",
    ]


async def test_one_sessions_deliveries_go_in_order_and_sessions_do_not_wait(
    relaying: Deployment, partner_backend: Partner
) -> None:
    # The partner is slow for ps_slow: its next delivery waits, ps_fast's do not.
    partner_backend.answer = lambda received: 200
    kinds = ["ready_to_confirm", "action_required", "ready_to_capture", "payment_finished"]
    for minute, kind in enumerate(kinds):
        for session_id in ("ps_a", "ps_b"):
            stamp = f"2027-01-15T07:0{minute}:00Z"
            await deliver(relaying, webhook(kind, session_id, updated_at=stamp))
    received = await partner_backend.arrived(8)
    for session_id in ("ps_a", "ps_b"):
        mine = [json.loads(item.body) for item in received]
        order = [item["type"] for item in mine if item["session"]["id"] == session_id]
        assert order == kinds
    # Never two of one session at the partner at once: each began after the one before ended.
    for session_id in ("ps_a", "ps_b"):
        times = [
            (item.started, item.ended)
            for item in received
            if json.loads(item.body)["session"]["id"] == session_id
        ]
        assert all(later[0] >= earlier[1] for earlier, later in zip(times, times[1:], strict=False))


async def test_a_slow_attempt_holds_up_no_other_session(
    relaying: Deployment, partner_backend: Partner
) -> None:
    # The partner takes its time over ps_slow's delivery (well within the relay's timeout);
    # ps_fast's deliveries, recorded meanwhile, go out at once all the same.
    holding, release = threading.Event(), threading.Event()

    def answer(received: Received) -> int:
        if json.loads(received.body)["session"]["id"] == "ps_slow":
            holding.set()
            release.wait(timeout=8)
        return 200

    partner_backend.answer = answer
    try:
        await deliver(relaying, webhook("ready_to_confirm", "ps_slow"))
        for _ in range(100):
            if holding.is_set():
                break
            await asyncio.sleep(0.05)
        assert holding.is_set()
        for number in range(3):
            await deliver(relaying, webhook("ready_to_confirm", f"ps_fast_{number}"))
            received = await partner_backend.arrived(number + 1, timeout=2)
            assert json.loads(received[-1].body)["session"]["id"] == f"ps_fast_{number}"
        assert not release.is_set()
    finally:
        release.set()
    received = await partner_backend.arrived(4)
    assert json.loads(received[-1].body)["session"]["id"] == "ps_slow"


async def test_a_failing_partner_gets_retries_then_the_next_delivery(
    relaying: Deployment, partner_backend: Partner, clock: FakeClock
) -> None:
    answers = iter([500, 503, 200, 200])
    partner_backend.answer = lambda received: next(answers)
    await deliver(relaying, webhook("ready_to_confirm", updated_at="2027-01-15T07:00:00Z"))
    await deliver(relaying, webhook("action_required", updated_at="2027-01-15T07:01:00Z"))
    for count in (2, 3):
        await relay_events(relaying, count - 1)  # the attempt before is on record
        clock.advance(100)  # past the delay, well within the maximum age
        relay_of(relaying).wake()
        await partner_backend.arrived(count)
    received = await partner_backend.arrived(4)
    assert [item.headers["x-bridge-attempt"] for item in received] == ["1", "2", "3", "1"]
    first = {item.headers["x-bridge-delivery-id"] for item in received[:3]}
    assert len(first) == 1  # one delivery, three attempts
    assert json.loads(received[3].body)["type"] == "action_required"  # only after the first
    relays = await relay_events(relaying, 4)
    assert [(e["attempt"], e["http_status"], e["state"]) for e in relays] == [
        (1, 500, "pending"),
        (2, 503, "pending"),
        (3, 200, "delivered"),
        (1, 200, "delivered"),
    ]


async def test_a_partner_that_is_down_is_retried(configured: Configured, clock: FakeClock) -> None:
    with recording_partner() as gone:
        url = gone.url
    async with configured(RELAY_URL=url, RELAY_TIMEOUT=2) as bridge:
        await deliver(bridge, webhook("ready_to_confirm"))
        for _ in range(100):
            pending = await bridge.app.extensions["bridge"].store.deliveries("pending", 10)
            if pending and pending[0].attempts:
                break
            await asyncio.sleep(0.05)
        assert pending[0].attempts >= 1 and pending[0].last_status is None


async def settled(database_url: str, clock: FakeClock) -> None:
    """Wait until no delivery is at the partner or due by ``clock``: the relay has done all
    it will do until the clock moves on (a loaded machine may take a while to get there)."""
    for _ in range(400):
        rows = await query(
            database_url, "SELECT state, next_attempt_at, claimed_until FROM deliveries"
        )
        pending = [row for row in rows if row[0] == DeliveryState.PENDING]
        if all(claimed is None and due > clock() for _, due, claimed in pending):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the relay did not settle: {rows}")


async def test_after_the_maximum_age_a_delivery_fails_and_can_be_retried(
    configured: Configured,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    config: dict[str, Any],
) -> None:
    with recording_partner() as backend:
        backend.answer = lambda received: 500
        async with configured(RELAY_URL=backend.url, RELAY_MAX_AGE=60) as bridge:
            headers = bridge.partner.headers
            await deliver(bridge, webhook("ready_to_confirm"))
            await backend.arrived(1)
            with caplog.at_level(logging.ERROR, logger="app.relay"):
                for count in range(2, 12):
                    clock.advance(61 if count > 8 else 5)
                    relay_of(bridge).wake()
                    await settled(config["DATABASE_URL"], clock)
                    (delivery,) = (
                        await (
                            await bridge.client.get("/api/v1/relay/deliveries", headers=headers)
                        ).get_json()
                    )["deliveries"]
                    if delivery["state"] == "failed":
                        break
            assert delivery["state"] == "failed" and delivery["last_status"] == 500
            assert delivery["session_id"] == "ps_1" and delivery["type"] == "ready_to_confirm"
            assert any("failed for good" in record.getMessage() for record in caplog.records)
            tries = len(backend.received)
            backend.answer = lambda received: 200
            path = f"/api/v1/relay/deliveries/{delivery['id']}/retry"
            assert (await bridge.client.post(path, headers=headers)).status_code == 202
            received = await backend.arrived(tries + 1)
            assert received[-1].headers["x-bridge-attempt"] == str(tries + 1)
            for _ in range(50):
                delivered = await (
                    await bridge.client.get(
                        "/api/v1/relay/deliveries?state=delivered", headers=headers
                    )
                ).get_json()
                if delivered["deliveries"]:
                    break
                await asyncio.sleep(0.05)
            assert [item["id"] for item in delivered["deliveries"]] == [delivery["id"]]
            assert (await bridge.client.post(path, headers=headers)).status_code == 409
            missing = "/api/v1/relay/deliveries/999999/retry"
            assert (await bridge.client.post(missing, headers=headers)).status_code == 404


async def test_the_deliveries_api_is_for_partners_only(relaying: Deployment) -> None:
    assert (await relaying.client.get("/api/v1/relay/deliveries")).status_code == 401
    bad = await relaying.client.get(
        "/api/v1/relay/deliveries?state=lost", headers=relaying.partner.headers
    )
    assert bad.status_code == 400


async def test_relay_metrics(relaying: Deployment, partner_backend: Partner) -> None:
    await deliver(relaying, webhook("ready_to_confirm"))
    await partner_backend.arrived(1)
    await asyncio.sleep(0.1)
    text = await (await relaying.client.get("/metrics")).get_data(as_text=True)
    assert 'bridge_relay_attempts_total{outcome="delivered"} 1.0' in text
    assert "bridge_relay_pending" in text and "bridge_relay_oldest_pending_seconds" in text


async def pending(db: asyncpg.Connection, count: int, tag: str) -> None:
    """``count`` webhooks of sessions of their own, each with its delivery pending and due."""
    await db.execute(
        "INSERT INTO webhooks (digest, session_id, type, received_at, body)"
        " SELECT sha256(($1 || g)::bytea), $1 || g, 't', 1e9, '{}' FROM"
        " generate_series(1, $2) g",
        tag,
        count,
    )
    await db.execute(
        "INSERT INTO deliveries (message_id, webhook_id, session_id, type, received_at,"
        " signature, state, attempts, next_attempt_at, retry_from) SELECT 'msg_' || id,"
        " id, session_id, type, 1e9, 'sig', 'pending', 0, 1e9, 1e9 FROM webhooks"
        " WHERE session_id LIKE $1",
        tag + "%",
    )


@dataclass(frozen=True)
class ClaimPlan:
    """What one claim of 16 read, from its plan as PostgreSQL ran it."""

    indexes: frozenset[str]
    rows: int  # every row a node of the plan produced or filtered out, over all its loops
    buffers: int  # shared buffers hit or read
    claimed: int


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def next_claim(db: asyncpg.Connection) -> ClaimPlan:
    """The relay's next claim, planned as the store plans it (the statement prepared once as
    ``claim`` and executed again, under the store's planning settings), run, and rolled back."""
    transaction = db.transaction()
    await transaction.start()
    try:
        await db.execute(CLAIM_PLANNING)
        explained = await db.fetchval(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE claim(2e9 + 60, 2e9, 2e9, 2e9, 16)"
        )
    finally:
        await transaction.rollback()
    plan = json.loads(explained)[0]["Plan"]
    nodes = list(plan_nodes(plan))
    return ClaimPlan(
        indexes=frozenset(node["Index Name"] for node in nodes if "Index Name" in node),
        rows=sum(
            (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * node["Actual Loops"]
            for node in nodes
        ),
        buffers=plan["Shared Hit Blocks"] + plan["Shared Read Blocks"],
        claimed=plan["Actual Rows"],
    )


@pytest.mark.parametrize(
    "before",
    ["first looks on an empty table", "analysed while idle", "analysed while idle, then upgraded"],
)
async def test_a_claim_reads_as_much_whatever_the_backlog_on_postgresql(
    postgres: PostgresServer, before: str
) -> None:
    # A burst leaves thousands of deliveries pending, and the relay claims them 16 at a time.
    # PostgreSQL plans the claim from what it believes of the table; a claim must read about
    # the 16 it takes whatever that is, and however long the backlog:
    # - "first looks": the senders' first claims ran on a nearly empty table (a new
    #   deployment), and the prepared statement kept the plan made then, which scanned the
    #   whole table for every candidate (0.6 s a claim with 3,000 pending);
    # - "analysed while idle": autovacuum analysed the table when nothing was pending, so the
    #   planner believed no delivery ever is, and checked each candidate's session against
    #   every pending delivery (5,104 rows read at 300 pending, 48,304 at 3,000); it plans
    #   without statistics of a delivery's state since migration 14;
    # - "then upgraded": those statistics were taken before migration 14, which drops them.
    # What a claim read is counted in its plan, not timed: the same figures on any machine
    # (bench/claims.py times claims on backlogs of 200,000). Without the store's planning
    # settings, a claim after the first looks read 18,128 rows at 3,000 pending, 192 with them.
    url = postgres.new_database()
    store = open_store(url)
    await store.open()
    db = await asyncpg.connect(url, server_settings=SERVER_SETTINGS)
    try:
        await db.execute("ALTER TABLE deliveries SET (autovacuum_enabled = false)")
        await db.execute("ALTER TABLE webhooks SET (autovacuum_enabled = false)")
        await db.execute(f"PREPARE claim AS {sql.POSTGRES.CLAIM_DELIVERIES_SKIP_LOCKED}")
        if before == "first looks on an empty table":
            for number in range(12):  # one delivery at a time
                await pending(db, 1, f"ps_first_{number}_")
                await next_claim(db)
            await db.execute("DELETE FROM deliveries")
        else:
            upgraded = before.endswith("upgraded")
            if upgraded:  # as a version before migration 14 kept statistics of the state
                await db.execute("ALTER TABLE deliveries ALTER COLUMN state SET STATISTICS -1")
            await pending(db, 5000, "ps_earlier_")
            await db.execute("UPDATE deliveries SET state = 'delivered'")
            await db.execute("ANALYZE deliveries")
            if upgraded:
                await db.execute(migrations.MIGRATIONS[13].postgres)
        await pending(db, 300, "ps_burst_")
        smaller = await next_claim(db)
        await pending(db, 2700, "ps_more_")
        larger = await next_claim(db)
        print(f"a claim at 300 pending: {smaller}; at 3,000: {larger}")
        for claim in (smaller, larger):
            assert claim.claimed == 16
            assert "deliveries_due" in claim.indexes  # walked in the order they fell due
            # About the candidates it takes: a few index entries and rows for each (a claim
            # planned on a first look at 300 pending read 4,976).
            assert claim.rows <= 16 * claim.claimed, claim
        # Ten times the backlog, no more read (an index a level deeper may cost a page each).
        assert larger.rows <= smaller.rows, (smaller, larger)
        assert larger.buffers <= 1.5 * smaller.buffers, (smaller, larger)
        # And the store claims the whole backlog, two senders at a time, each delivery once.
        one, other = await asyncio.wait_for(asyncio.gather(drain(store), drain(store)), 180)
        assert len(one | other) == 3000 and not one & other
    finally:
        await db.close()
        await store.close()


async def drain(store: Store) -> set[int]:
    """A sender's claims until none is left (none sent: a claim holds until after the last):
    the deliveries it claimed."""
    claimed: set[int] = set()
    while jobs := await store.claim_deliveries(2e9, 2e9 + 60, 16):
        claimed.update(job.id for job in jobs)
    return claimed


@pytest.mark.parametrize(
    ("attempts", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (10, 512.0), (11, 600.0), (60, 600.0)]
)
def test_retries_grow_up_to_the_longest_pause(attempts: int, expected: float) -> None:
    for jitter, share in ((0.0, 0.5), (0.999999, 1.0)):
        later = next_attempt(
            attempts=attempts, retry_from=0, now=100, max_delay=600, max_age=10**6, jitter=jitter
        )
        assert later == pytest.approx(100 + expected * share, rel=1e-5)


def test_a_retry_past_the_maximum_age_is_none() -> None:
    assert (
        next_attempt(attempts=1, retry_from=0, now=59, max_delay=600, max_age=60, jitter=0) == 59.5
    )
    assert (
        next_attempt(attempts=1, retry_from=0, now=60, max_delay=600, max_age=60, jitter=0) is None
    )


class _Lookups:
    """A finder that notes every module Python searches for, finding none itself."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, name: str, *_: object) -> None:
        self.names.append(name)


async def test_a_delivery_searches_for_no_module(
    relaying: Deployment, partner_backend: Partner
) -> None:
    """No import is tried per delivery: httpcore (under httpx, the relay's client before) asked
    for sniffio on every request and, without it installed, searched the disk each time (some
    120 us, several per delivery, found by the webhook route's profile)."""
    await deliver(relaying, webhook("ready_to_confirm", updated_at="2027-01-15T07:00:00Z"))
    await partner_backend.arrived(1)
    lookups = _Lookups()
    sys.meta_path.insert(0, lookups)
    try:
        for minute in range(1, 4):
            stamp = f"2027-01-15T07:0{minute}:00Z"
            await deliver(relaying, webhook("action_required", updated_at=stamp))
        await partner_backend.arrived(4)
    finally:
        sys.meta_path.remove(lookups)
    assert lookups.names == []


async def test_deliveries_one_after_another_share_one_connection(
    relaying: Deployment, partner_backend: Partner
) -> None:
    """The partner's answer is read to its end, so its connection carries the next delivery
    (an answer left unread closed it: a new TCP connection for every delivery)."""
    for minute in range(4):
        stamp = f"2027-01-15T07:0{minute}:00Z"
        await deliver(relaying, webhook("action_required", updated_at=stamp))
        await partner_backend.arrived(minute + 1)
    assert len({received.port for received in partner_backend.received}) == 1


async def test_the_relay_never_sends_netrc_credentials(
    configured: Configured,
    partner_backend: Partner,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``.netrc`` on the bridge's host holds someone's credentials for other uses; the relay
    must not hand them to the partner (as ``Authorization: Basic``, over plain http here)."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login operator password hunter2-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".netrc").write_text(netrc.read_text())
    (tmp_path / ".netrc").chmod(0o600)
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        await deliver(bridge, webhook("ready_to_confirm"))
        (received,) = await partner_backend.arrived(1)
    assert "authorization" not in received.headers


async def test_the_relay_goes_through_the_proxy_the_environment_names(
    configured: Configured, partner_backend: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTP_PROXY`` (and ``NO_PROXY``) are honoured, as deployments expect: the recording
    partner plays the proxy and is asked for the partner's URL in absolute form."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    proxy = partner_backend.url.removesuffix("/smart-glocal").replace("://", "://op:s%40cret@")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    async with configured(RELAY_URL="http://partner.invalid/hook") as bridge:
        await deliver(bridge, webhook("ready_to_confirm"))
        (received,) = await partner_backend.arrived(1)
    assert received.path == "http://partner.invalid/hook"
    assert received.headers["proxy-authorization"] == "Basic " + "b3A6c0BjcmV0"  # op:s@cret
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with recording_partner() as direct:
        async with configured(RELAY_URL=direct.url) as bridge:
            await deliver(bridge, webhook("ready_to_confirm", "ps_2"))
            (straight,) = await direct.arrived(1)
    assert straight.path == "/smart-glocal"
    assert len(partner_backend.received) == 1


async def test_a_partner_verifies_every_message_with_the_standard_webhooks_library(
    configured: Configured, partner_backend: Partner, clock: FakeClock
) -> None:
    """Signed with each secret while rotating (a partner holding either verifies); a tampered
    body, id or timestamp fails; the id is the same on every attempt of one delivery."""
    new_secret = "whsec_" + "QUJD" * 8
    partner_backend.answer = lambda received: 500 if len(partner_backend.received) < 1 else 200
    async with configured(
        RELAY_URL=partner_backend.url, RELAY_SECRET=f"{RELAY_SECRET} {new_secret}"
    ) as bridge:
        await deliver(bridge, webhook("ready_to_confirm"))
        await relay_events(bridge, 1)  # the first attempt's outcome is stored, its retry set
        clock.advance(5)  # past the first retry's pause
        relay_of(bridge).wake()
        first, second = await partner_backend.arrived(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert [first.headers["x-bridge-attempt"], second.headers["x-bridge-attempt"]] == ["1", "2"]
    assert len(second.headers["webhook-signature"].split(" ")) == 2
    for secret in (RELAY_SECRET, new_secret):
        assert Webhook(secret).verify(second.body, second.headers) == json.loads(second.body)
    stamp = second.headers["webhook-timestamp"]
    tampered = [
        (second.body + b" ", second.headers),
        (second.body, {**second.headers, "webhook-id": "msg_other"}),
        (second.body, {**second.headers, "webhook-timestamp": str(int(stamp) - 1)}),
    ]
    for body, headers in tampered:
        with pytest.raises(WebhookVerificationError):
            Webhook(RELAY_SECRET).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "WFla" * 8).verify(second.body, second.headers)


async def test_two_bridges_and_a_fresh_start_never_give_one_id_twice(
    configured: Configured, partner_backend: Partner, tmp_path: Any, clock: FakeClock
) -> None:
    """A second bridge with a database of its own (a move to PostgreSQL, a restored backup,
    staging beside production) relaying to the same partner, and a bridge whose retention
    emptied its tables: every message id the partner sees is new to it."""
    flow = ["ready_to_confirm", "action_required", "payment_finished"]
    databases = [None, f"sqlite:///{tmp_path}/second.sqlite3"]
    for number, database in enumerate(databases):
        settings = {"RELAY_URL": partner_backend.url, "RETENTION_DAYS": 1}
        async with configured(
            **settings, **({"DATABASE_URL": database} if database else {})
        ) as bridge:
            for second, kind in enumerate(flow):
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now - 60 + second))
                await deliver(bridge, webhook(kind, updated_at=stamp))
            await partner_backend.arrived(3 + 4 * number)
            if number == 0:  # then retention empties this one, which goes on relaying
                for _ in range(50):
                    if not (await bridge.app.extensions["bridge"].store.relay_backlog())[0]:
                        break
                    await asyncio.sleep(0.05)
                clock.advance(2 * 86_400)
                assert await bridge.app.extensions["bridge"].forget_old() > 0
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock.now))
                await deliver(bridge, webhook("payment_refunded", "ps_2", updated_at=stamp))
                await partner_backend.arrived(4)
    ids = [received.headers["webhook-id"] for received in partner_backend.received]
    assert len(ids) == 7 and len(set(ids)) == 7, ids


async def test_a_connection_is_free_for_the_next_delivery_while_an_outcome_is_written(
    configured: Configured, partner_backend: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt's time at the partner is a connection's; writing its outcome is not: with one
    connection, a second session's delivery goes out while the first's outcome waits for its
    commit (which a loaded database makes long), and the first session's next one waits."""
    monkeypatch.setattr("app.relay.CONNECTIONS", 1)
    async with configured(RELAY_URL=partner_backend.url, RELAY_MAX_AGE=600) as bridge:
        store = bridge.app.extensions["bridge"].store
        finish, written = store.finish_attempts, asyncio.Event()

        async def slow_to_write(attempts: list[Attempt]) -> list[bool]:
            await written.wait()
            return list(await finish(attempts))

        monkeypatch.setattr(store, "finish_attempts", slow_to_write)
        await deliver(bridge, webhook("ready_to_confirm", "ps_first"))
        await partner_backend.arrived(1)
        await deliver(bridge, webhook("ready_to_capture", "ps_first"))
        await deliver(bridge, webhook("ready_to_confirm", "ps_second"))
        received = await partner_backend.arrived(2, timeout=5)
        assert [json.loads(item.body)["session"]["id"] for item in received] == [
            "ps_first",
            "ps_second",  # the first's next waits until its outcome is on record
        ]
        written.set()
        received = await partner_backend.arrived(3)
        assert json.loads(received[2].body)["type"] == "ready_to_capture"


def relay_senders() -> list[asyncio.Task[Any]]:
    """The relay's sender loops still running in this event loop."""
    return [task for task in asyncio.all_tasks() if task.get_name() == "relay sender"]


async def test_the_relay_stops_when_woken_as_it_is_stopped(relaying: Deployment) -> None:
    """A webhook recorded (or an attempt ended) just as the app stops wakes the sender in the
    same turn of the loop as its cancellation: the sender stops all the same, by itself (a
    second cancellation, here the deadline's, is not what ends it)."""
    relay = relay_of(relaying)
    await asyncio.sleep(0.3)  # the sender has looked for work and waits for more
    relay.wake()
    async with asyncio.timeout(5) as deadline:
        await relay.stop()
    assert not deadline.expired()
    assert relay_senders() == []


async def test_stopping_cuts_short_an_attempt_the_partner_never_answers_and_it_is_sent_again(
    configured: Configured, partner_backend: Partner, clock: FakeClock
) -> None:
    """The partner takes the request and never answers: stopping does not wait for the
    attempt's time limit, and the delivery, claimed but never finished, goes out again once
    its claim has lapsed."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.setblocking(False)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/smart-glocal"
        async with configured(RELAY_URL=url, RELAY_TIMEOUT=300) as bridge:
            body, _ = await deliver(bridge, webhook("ready_to_confirm"))
            async with asyncio.timeout(20):  # the attempt arrives, and is never answered
                connection, _ = await loop.sock_accept(silent)
                request = await loop.sock_recv(connection, 65536)
            with connection:
                assert request.startswith(b"POST /smart-glocal")
                (claimed,) = await bridge.app.extensions["bridge"].store.deliveries("pending", 10)
                async with asyncio.timeout(20) as deadline:  # far below the attempt's 300 s
                    await relay_of(bridge).stop()
                assert not deadline.expired()
                assert relay_senders() == []
    clock.advance(300 + CLAIM_MARGIN + 1)
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        (received,) = await partner_backend.arrived(1)
    assert received.body == body
    assert received.headers["webhook-id"] == claimed.id
    assert received.headers["x-bridge-attempt"] == "1"  # the one cut short is not on record


STAMPS = ("2027-01-15T07:00:00Z", "2027-01-15T07:01:00Z")


class HeldWrites:
    """The store's writes of outcomes, each held until ``release`` is set, then failing with
    ``failure`` when one is given: the batches they were asked to write, in order."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[list[Attempt]] = []
        self.release = asyncio.Event()
        self.failure: Exception | None = None
        finish = store.finish_attempts

        async def held(attempts: list[Attempt]) -> list[bool]:
            self.batches.append(list(attempts))
            await self.release.wait()
            if self.failure is not None:
                raise self.failure
            return list(await finish(attempts))

        monkeypatch.setattr(store, "finish_attempts", held)

    async def asked(self, count: int) -> None:
        """Until ``count`` writes were asked for."""
        for _ in range(400):
            if len(self.batches) >= count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(self.batches)} writes of outcomes, not {count}")


async def gathered(bridge: Deployment, count: int) -> None:
    """Until ``count`` outcomes wait for the write after the one in flight."""
    for _ in range(400):
        if len(relay_of(bridge)._outcomes._gathered) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(relay_of(bridge)._outcomes._gathered)} outcomes gathered")


async def on_record(bridge: Deployment, state: str, count: int) -> list[Any]:
    store = bridge.app.extensions["bridge"].store
    for _ in range(400):
        if len(found := await store.deliveries(state, 100)) >= count:
            return list(found)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(found)} deliveries {state}, not {count}")


def relayed_sessions(received: list[Received]) -> list[tuple[str, str]]:
    return [
        (body["session"]["id"], body["type"])
        for body in (json.loads(item.body) for item in received)
    ]


async def test_outcomes_that_finish_together_are_written_together(
    relaying: Deployment, partner_backend: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet relay writes its first outcome at once, alone; the outcomes that finish while
    that write is in flight are written together in the next. A session's next delivery
    waits until its outcome is on record, batched or not."""
    writes = HeldWrites(relaying.app.extensions["bridge"].store, monkeypatch)
    sessions = [f"ps_{number}" for number in range(9)]
    await deliver(relaying, webhook("ready_to_confirm", sessions[0], updated_at=STAMPS[0]))
    await writes.asked(1)
    assert [len(batch) for batch in writes.batches] == [1]
    for session_id in sessions:
        if session_id != sessions[0]:
            await deliver(relaying, webhook("ready_to_confirm", session_id, updated_at=STAMPS[0]))
        await deliver(relaying, webhook("action_required", session_id, updated_at=STAMPS[1]))
    await gathered(relaying, 8)
    await asyncio.sleep(0.3)
    assert sorted(relayed_sessions(partner_backend.received)) == [
        (session_id, "ready_to_confirm") for session_id in sessions
    ]  # the second of each waits for the first's outcome
    assert [len(batch) for batch in writes.batches] == [1]
    writes.release.set()
    received = await partner_backend.arrived(18)
    await on_record(relaying, "delivered", 18)
    sizes = [len(batch) for batch in writes.batches]
    assert sizes[:2] == [1, 8] and sum(sizes) == 18
    for session_id in sessions:
        order = [kind for session, kind in relayed_sessions(received) if session == session_id]
        assert order == ["ready_to_confirm", "action_required"]


async def test_a_batch_whose_write_fails_loses_nothing(
    configured: Configured,
    partner_backend: Partner,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The storage fails the writes of a batch: no outcome of it is on record, each attempt
    counts as pending and says so in the log, and once their claims lapse every delivery is
    sent again and then recorded."""
    async with configured(RELAY_URL=partner_backend.url, RELAY_TIMEOUT=2) as bridge:
        writes = HeldWrites(bridge.app.extensions["bridge"].store, monkeypatch)
        writes.failure = StorageUnavailableError("the database is away")
        with caplog.at_level(logging.WARNING, logger="app.relay"):
            for number in range(5):
                await deliver(bridge, webhook("ready_to_confirm", f"ps_{number}"))
                if number == 0:
                    await writes.asked(1)
            await gathered(bridge, 4)
            writes.release.set()
            await writes.asked(2)
            for _ in range(100):
                lost = [r for r in caplog.records if "could not be stored" in r.getMessage()]
                if len(lost) == 5:
                    break
                await asyncio.sleep(0.05)
        assert len(lost) == 5
        assert [len(batch) for batch in writes.batches] == [1, 4]
        text = await (await bridge.client.get("/metrics")).get_data(as_text=True)
        assert 'bridge_relay_attempts_total{outcome="pending"} 5.0' in text
        assert await on_record(bridge, "pending", 5)
        writes.failure = None
        clock.advance(2 + CLAIM_MARGIN + 1)  # the claims have lapsed
        relay_of(bridge).wake()
        received = await partner_backend.arrived(10)
        delivered = await on_record(bridge, "delivered", 5)
    assert sorted(relayed_sessions(received)) == sorted(
        [(f"ps_{number}", "ready_to_confirm") for number in range(5)] * 2
    )
    assert {item.headers["x-bridge-attempt"] for item in received} == {"1"}
    assert {delivery.attempts for delivery in delivered} == {1}


async def test_stopping_writes_the_outcomes_the_partner_already_gave(
    configured: Configured, partner_backend: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay stops while outcomes wait for their write: the store is still open (it
    closes after the relay), so they are written before the relay has stopped, and counted."""
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        writes = HeldWrites(bridge.app.extensions["bridge"].store, monkeypatch)
        await deliver(bridge, webhook("ready_to_confirm", "ps_0"))
        await writes.asked(1)
        for session_id in ("ps_1", "ps_2"):
            await deliver(bridge, webhook("ready_to_confirm", session_id))
        await gathered(bridge, 2)
        stopping = asyncio.create_task(relay_of(bridge).stop())
        await asyncio.sleep(0.3)
        assert not stopping.done()  # it waits for the outcomes
        writes.release.set()
        async with asyncio.timeout(10):
            await stopping
        assert relay_senders() == []
        assert [len(batch) for batch in writes.batches] == [1, 2]
        delivered = await bridge.app.extensions["bridge"].store.deliveries("delivered", 10)
        assert len(delivered) == 3
        text = await (await bridge.client.get("/metrics")).get_data(as_text=True)
        assert 'bridge_relay_attempts_total{outcome="delivered"} 3.0' in text


async def test_stopping_waits_a_bounded_time_for_outcomes_then_their_claims_lapse(
    configured: Configured,
    partner_backend: Partner,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outcome's write that does not end: stopping waits FINAL_WRITE for it and no
    longer; its delivery, claimed but never finished, goes out again once its claim lapsed."""
    monkeypatch.setattr("app.relay.FINAL_WRITE", 0.5)
    async with configured(RELAY_URL=partner_backend.url, RELAY_TIMEOUT=2) as bridge:
        writes = HeldWrites(bridge.app.extensions["bridge"].store, monkeypatch)
        body, _ = await deliver(bridge, webhook("ready_to_confirm"))
        await writes.asked(1)
        async with asyncio.timeout(10) as deadline:
            await relay_of(bridge).stop()
        assert not deadline.expired()
        assert relay_senders() == []
        assert [task for task in asyncio.all_tasks() if task.get_name() == "batch writer"] == []
    clock.advance(2 + CLAIM_MARGIN + 1)
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        received = await partner_backend.arrived(2)
        (delivered,) = await on_record(bridge, "delivered", 1)
    assert [item.body for item in received] == [body, body]
    assert [item.headers["x-bridge-attempt"] for item in received] == ["1", "1"]
    assert delivered.attempts == 1


async def test_a_delivery_claimed_again_while_its_first_attempt_is_out_counts_twice(
    configured: Configured, clock: FakeClock
) -> None:
    """Its claim lapsed by the bridge's clock (a clock stepped on, a machine resumed) while the
    first attempt is still at a partner that does not answer: the second attempt is counted
    at the partner too, and stopping cuts it short rather than waiting for it."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as silent:
        silent.setblocking(False)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/smart-glocal"
        async with configured(RELAY_URL=url, RELAY_TIMEOUT=30) as bridge:
            await deliver(bridge, webhook("ready_to_confirm"))
            async with asyncio.timeout(20):
                first, _ = await loop.sock_accept(silent)
                await loop.sock_recv(first, 65536)
            clock.advance(30 + CLAIM_MARGIN + 1)
            async with asyncio.timeout(20):
                second, _ = await loop.sock_accept(silent)
                await loop.sock_recv(second, 65536)
            with second:
                first.close()  # the first attempt ends, unanswered, while the second is out
                relay = relay_of(bridge)
                async with asyncio.timeout(10):
                    while len(relay._in_flight) > 1:
                        await asyncio.sleep(0.05)
                assert len(relay._posting) == 1
                async with asyncio.timeout(FINAL_WRITE / 2):
                    await relay.stop()


async def test_a_stop_cut_short_leaves_no_outcome_written_after_it(
    configured: Configured, partner_backend: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The relay's stop, cancelled while it gives the partner's answers their last write,
    still closes its batch writer: nothing of the relay's writes after it."""
    async with configured(RELAY_URL=partner_backend.url) as bridge:
        store = bridge.app.extensions["bridge"].store
        writes = HeldWrites(store, monkeypatch)
        await deliver(bridge, webhook("ready_to_confirm", "ps_0"))
        await writes.asked(1)
        stopping = asyncio.create_task(relay_of(bridge).stop())
        await asyncio.sleep(0.2)  # within FINAL_WRITE's wait
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        writes.release.set()
        await asyncio.sleep(0.3)
        assert relay_of(bridge)._outcomes._writer is None
        assert await store.deliveries("delivered", 10) == []
