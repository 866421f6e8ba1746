"""A session's history for support, and how long the bridge keeps what it was sent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .conftest import Configured, FakeClock, Partner, Provider
from .database import query
from .payloads import webhook

SECRETS = ("sdfew^//asdhbv", "abc75daefnn", "acs.bank.test", "444600", "8801", "user@sg.com")


async def history(client: Any, partner: Partner, count: int = 0) -> list[dict[str, Any]]:
    """The session's events, once there are ``count`` (page views are written a moment after
    the page)."""
    for _ in range(100):
        answer = await client.get("/api/v1/sessions/ps_1/events", headers=partner.headers)
        assert answer.status_code == 200
        events: list[dict[str, Any]] = (await answer.get_json())["events"]
        if len(events) >= count:
            return events
        await asyncio.sleep(0.02)
    raise AssertionError(f"{len(events)} events, not {count}")


def brief(event: dict[str, Any]) -> tuple[Any, ...]:
    kind = event["kind"]
    if kind == "webhook":
        return (kind, event["type"], event["outcome"], event["changed"], event["status"])
    if kind == "page":
        return (kind, event["step"])
    return (kind,)


async def test_the_history_of_a_confirm_first_payment(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()

    async def look(count: int) -> None:
        clock.advance(1)
        await client.get(f"/pay/{token}")
        await history(client, partner, count)

    await look(1)
    first = webhook("ready_to_confirm", updated_at="2027-01-15T07:00:00.000000Z")
    await provider.send(first)
    await look(3)
    await look(3)  # the same page again: not a new entry
    await provider.send(webhook("action_required", updated_at="2027-01-15T07:01:00.000000Z"))
    await look(5)
    clock.advance(1)
    await client.post(f"/pay/{token}/return")
    await history(client, partner, 7)
    await provider.send(first)  # a retry of the first: a duplicate, and it changes nothing
    await provider.send(
        webhook(
            "payment_finished",
            session_status="accepted",
            updated_at="2027-01-15T07:02:00.000000Z",
        )
    )
    await look(10)
    events = await history(client, partner, 10)
    assert [brief(event) for event in events] == [
        ("page", "waiting"),
        ("webhook", "ready_to_confirm", "accepted", True, "in_progress"),
        ("page", "waiting"),
        ("webhook", "action_required", "accepted", True, "action_required"),
        ("page", "bank"),
        ("return",),
        ("page", "waiting"),
        ("webhook", "ready_to_confirm", "duplicate", False, "action_required"),
        ("webhook", "payment_finished", "accepted", True, "succeeded"),
        ("page", "outcome"),
    ]
    assert events[1]["provider_updated_at"] == "2027-01-15T07:00:00.000Z"
    assert all(event["at"].endswith("Z") for event in events)
    assert [event["at"] for event in events] == sorted(event["at"] for event in events)
    text = json.dumps(events)
    for secret in SECRETS:
        assert secret not in text


async def test_a_page_view_is_in_the_history_once_and_before_its_page_is_answered(
    app: Any, provider: Provider, partner: Partner, client: Any
) -> None:
    """The first read builds the page, the next are sent as kept, one is built again after
    what was kept went: the history holds the view as each answer arrives, and once."""
    token = await partner.token()
    await provider.deliver("action_required")
    path = f"/pay/{token}"

    async def pages() -> list[tuple[Any, ...]]:
        answer = await client.get("/api/v1/sessions/ps_1/events", headers=partner.headers)
        return [brief(event) for event in (await answer.get_json())["events"][1:]]

    assert (await client.head(path)).status_code == 200
    assert await pages() == []  # a HEAD shows nobody anything
    assert (await client.get(path)).status_code == 200
    assert await pages() == [("page", "bank")]  # no waiting: written before the answer
    for _ in range(3):
        assert (await client.get(path)).status_code == 200
    app.extensions["bridge"].answers.drop(None)  # built again
    assert (await client.get(path, headers={"Accept-Language": "ru"})).status_code == 200
    assert await pages() == [("page", "bank")]


async def test_the_timeout_is_in_the_history(
    app: Any, provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    await provider.deliver("action_required")
    clock.advance(3600)
    assert await app.extensions["bridge"].sweep() == 1
    assert [brief(event) for event in await history(client, partner, 2)] == [
        ("webhook", "action_required", "accepted", True, "action_required"),
        ("timeout",),
    ]


async def test_history_is_for_partners_and_known_sessions(partner: Partner, client: Any) -> None:
    assert (await client.get("/api/v1/sessions/ps_1/events")).status_code == 401
    unknown = await client.get("/api/v1/sessions/ps_none/events", headers=partner.headers)
    assert unknown.status_code == 404
    await partner.token()
    known = await client.get("/api/v1/sessions/ps_1/events", headers=partner.headers)
    assert (known.status_code, await known.get_json()) == (200, {"events": []})


async def test_the_bank_instruction_is_dropped_once_final(app: Any, provider: Provider) -> None:
    store = app.extensions["bridge"].store
    await provider.deliver("action_required", updated_at="2027-01-15T07:00:00Z")
    assert (await store.get_session("ps_1")).interaction is not None
    await provider.deliver(
        "payment_finished", session_status="accepted", updated_at="2027-01-15T07:01:00Z"
    )
    assert (await store.get_session("ps_1")).interaction is None


async def test_retention_deletes_old_bodies_and_finished_sessions_keeping_the_history(
    configured: Configured, clock: FakeClock, database_url: str
) -> None:
    async with configured(RETENTION_DAYS=30) as bridge:
        core = bridge.app.extensions["bridge"]
        await bridge.provider.deliver("action_required", "ps_old_done")
        await bridge.provider.deliver("payment_finished", "ps_old_done", session_status="accepted")
        await bridge.provider.deliver("action_required", "ps_old_open")
        clock.advance(29 * 86_400)
        await bridge.provider.deliver("action_required", "ps_recent")
        assert await core.forget_old() == 0  # nothing is 30 days old yet
        clock.advance(2 * 86_400)
        assert await core.forget_old() == 4  # three old bodies and one finished session
        assert await core.forget_old() == 0
        assert await core.session("ps_old_done") is None
        assert (await core.session("ps_old_open")) is not None  # not finished: kept
        bodies = await query(database_url, "SELECT session_id FROM webhooks")
        assert [row[0] for row in bodies] == ["ps_recent"]
        kept = await bridge.client.get(
            "/api/v1/sessions/ps_old_done/events", headers=bridge.partner.headers
        )
        assert [brief(event) for event in (await kept.get_json())["events"]] == [
            ("webhook", "action_required", "accepted", True, "action_required"),
            ("webhook", "payment_finished", "accepted", True, "succeeded"),
            ("forgotten",),
        ]


async def test_retention_may_be_a_fraction_of_a_day(
    configured: Configured, clock: FakeClock
) -> None:
    """Half a day: a session finished 11 hours ago is kept, one finished 13 hours ago is not
    (a short retention is what a soak of half an hour needs to see the sweep delete)."""
    async with configured(RETENTION_DAYS="0.5") as bridge:
        core = bridge.app.extensions["bridge"]
        await bridge.provider.deliver("payment_finished", "ps_done", session_status="accepted")
        clock.advance(11 * 3600)
        assert await core.forget_old() == 0
        clock.advance(2 * 3600)
        assert await core.forget_old() == 2  # its body and the finished session
        assert await core.session("ps_done") is None


async def test_retention_deletes_in_batches(
    configured: Configured, clock: FakeClock, monkeypatch: Any
) -> None:
    from app import bridge as bridge_module

    monkeypatch.setattr(bridge_module, "FORGET_BATCH", 2)
    async with configured(RETENTION_DAYS=1) as bridge:
        for number in range(5):
            await bridge.provider.deliver("ready_to_confirm", f"ps_{number}")
        clock.advance(2 * 86_400)
        assert await bridge.app.extensions["bridge"].forget_old() == 5


async def test_changed_says_whether_the_status_moved(
    provider: Provider, partner: Partner, client: Any
) -> None:
    await provider.deliver("payment_captured")  # a type the bridge does not know
    await provider.deliver("ready_to_confirm", updated_at="2027-01-15T07:01:00Z")
    await provider.deliver("ready_to_confirm", updated_at="2027-01-15T07:02:00Z", note="news")
    events = await history(client, partner, 3)
    assert [(event["changed"], event["status"]) for event in events] == [
        (False, "pending"),
        (True, "in_progress"),
        (False, "in_progress"),  # newer, but the status stayed
    ]


async def test_a_webhook_after_the_window_says_the_status_it_found(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    payload = webhook("action_required", updated_at="2027-01-15T07:00:00Z")
    await provider.send(payload)
    clock.advance(3600)  # the window has passed; no sweep has run
    await provider.send(payload)  # a duplicate
    events = await history(client, partner, 2)
    assert (events[1]["outcome"], events[1]["status"]) == ("duplicate", "canceled")


async def test_a_replay_older_than_retention_is_ignored_and_reopens_nothing(
    configured: Configured, clock: FakeClock, database_url: str
) -> None:
    """Retention deleted a finished session; replaying its original signed ``action_required``
    must not bring it back (nor its bank form), create anything or be relayed."""
    from .partner import recording_partner

    with recording_partner() as backend:
        async with configured(RETENTION_DAYS=30, RELAY_URL=backend.url) as bridge:
            core = bridge.app.extensions["bridge"]
            original = webhook("action_required", updated_at="2027-01-15T07:00:00Z")
            first = await bridge.provider.send(original)
            assert await first.get_json() == {"status": "accepted"}
            finished = webhook(
                "payment_finished", session_status="accepted", updated_at="2027-01-15T07:05:00Z"
            )
            await bridge.provider.send(finished)
            await backend.arrived(2)
            for _ in range(100):  # the partner has both: their outcomes are stored too
                if not (await core.store.relay_backlog())[0]:
                    break
                await asyncio.sleep(0.02)
            clock.advance(31 * 86_400)
            assert await core.forget_old() > 0
            assert await core.session("ps_1") is None
            before = await query(database_url, "SELECT count(*) FROM events")
            replayed = await bridge.provider.send(original)
            assert replayed.status_code == 200
            assert await replayed.get_json() == {"status": "ignored"}
            assert await core.session("ps_1") is None
            unknown = await bridge.partner.session()
            assert unknown.status_code == 404
            assert await query(database_url, "SELECT count(*) FROM events") == before
            assert await query(database_url, "SELECT count(*) FROM webhooks") == [(0,)]
            await asyncio.sleep(0.3)
            assert len(backend.received) == 2  # the replay went nowhere
            # A webhook dated within the period is news, even for a forgotten session.
            fresh = webhook("payment_refunded", updated_at="2027-02-15T07:00:00Z")
            assert await (await bridge.provider.send(fresh)).get_json() == {"status": "accepted"}


async def test_a_token_whose_session_retention_deleted_reads_as_expired(
    configured: Configured, clock: FakeClock
) -> None:
    """A token minted late in the retention period outlives its session's data: once that is
    deleted the token opens nothing (it never reads ``pending`` for a session that ended), and
    a new token minted after the deletion is a new start."""
    async with configured(RETENTION_DAYS=1, TOKEN_TTL=6 * 3600) as bridge:
        core = bridge.app.extensions["bridge"]
        await bridge.provider.deliver("payment_finished", session_status="accepted")
        clock.advance(86_400 - 3600)
        token = await bridge.partner.token()  # the session is final: minting keeps it so
        status = f"/api/v1/status/{token}"
        assert (await (await bridge.client.get(status)).get_json())["status"] == "succeeded"
        clock.advance(2 * 3600)
        assert await core.forget_old() > 0
        assert (await bridge.client.get(status)).status_code == 404
        assert (await bridge.client.get(f"{status}?via=app")).status_code == 404
        assert (await bridge.client.get(f"/pay/{token}")).status_code == 404
        # The partner mints anew for the same id: the old token still opens nothing.
        fresh = await bridge.partner.token()
        assert (await bridge.client.get(status)).status_code == 404
        assert (await bridge.client.get(f"/pay/{token}")).status_code == 404
        answer = await bridge.client.get(f"/api/v1/status/{fresh}")
        assert (await answer.get_json())["status"] == "pending"
        kinds = await bridge.client.get(
            "/api/v1/sessions/ps_1/events", headers=bridge.partner.headers
        )
        assert "forgotten" in [event["kind"] for event in (await kinds.get_json())["events"]]


async def test_a_replay_not_newer_than_its_forgotten_session_is_ignored(
    configured: Configured, clock: FakeClock, database_url: str
) -> None:
    """What the provider's clock alone cannot tell: a body without ``session.updated_at``, or
    one the provider dated ahead of the bridge's clock, replayed just after retention deleted
    its session. Nothing newer than what the session had heard is news for it."""
    async with configured(RETENTION_DAYS=30) as bridge:
        core = bridge.app.extensions["bridge"]
        undated = webhook("action_required")
        del undated["session"]["updated_at"]
        ahead = webhook("ready_to_confirm", "ps_2", updated_at="2027-01-16T08:00:00Z")
        for payload in (undated, ahead):
            assert await (await bridge.provider.send(payload)).get_json() == {"status": "accepted"}
        for session_id in ("ps_1", "ps_2"):
            await bridge.provider.deliver(
                "payment_finished",
                session_id,
                session_status="accepted",
                updated_at="2027-01-16T08:01:00Z",
            )
        clock.advance(30 * 86_400 + 3600)  # a day after the provider's times, by its clock
        assert await core.forget_old() > 0
        before = await query(database_url, "SELECT count(*) FROM events")
        for payload in (undated, ahead):
            replayed = await bridge.provider.send(payload)
            assert await replayed.get_json() == {"status": "ignored"}
        assert await core.session("ps_1") is None and await core.session("ps_2") is None
        assert await query(database_url, "SELECT count(*) FROM events") == before
        news = webhook("payment_refunded", "ps_2", updated_at="2027-02-16T09:00:00Z")
        assert await (await bridge.provider.send(news)).get_json() == {"status": "accepted"}
