"""Answers built once per change (app.answers) and sent from below Quart (app.front): the same
bytes as the app's own, never older than the database, bounded."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from app import lifecycle, security
from app.answers import MAX_PER_SESSION, Answers, Built
from app.changes import ChangeFeed

from .conftest import FakeClock, Partner, Provider, read_twice, without_request_id
from .database import open_store
from .payloads import redirect


def counted(app: Any, route: str, outcome: str) -> float:
    metrics = app.extensions["bridge"].metrics
    value: float = metrics.kept_answers.labels(route, outcome)._value.get()
    return value


def forget_all(app: Any) -> None:
    app.extensions["bridge"].answers.drop(None)


async def same(first: Any, second: Any) -> None:
    assert (first.status_code, await first.get_data()) == (
        second.status_code,
        await second.get_data(),
    )
    assert without_request_id(first.headers) == without_request_id(second.headers)


async def test_a_status_answer_is_built_once_and_then_sent_as_kept(
    app: Any, client: Any, partner: Partner, provider: Provider
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    path = f"/api/v1/status/{token}"
    built = await client.get(path)
    kept = [await client.get(path) for _ in range(3)]
    assert counted(app, "status", "built") == 1
    assert counted(app, "status", "kept") == 3
    for answer in kept:
        await same(built, answer)
    assert built.headers["Access-Control-Allow-Origin"] == "*"
    assert built.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_304_and_a_long_poll_are_the_same_from_either_path(
    app: Any, client: Any, partner: Partner, provider: Provider
) -> None:
    token = await partner.token()
    path = f"/api/v1/status/{token}"
    etag = (await client.get(path)).headers["ETag"]
    for asked in ({}, {"wait": "1"}):
        forget_all(app)
        by_app = await client.get(
            path, headers={"If-None-Match": etag}, query_string={**asked, "via": "app"}
        )
        by_front = await client.get(path, headers={"If-None-Match": etag}, query_string=asked)
        assert by_app.status_code == by_front.status_code == 304
        await same(by_app, by_front)
    assert counted(app, "status", "kept") >= 2


async def test_a_change_is_seen_at_once_by_the_next_read_and_by_a_held_long_poll(
    client: Any, partner: Partner, provider: Provider, clock: FakeClock
) -> None:
    token = await partner.token()
    path = f"/api/v1/status/{token}"
    pending = await read_twice(client, path)
    waiting = asyncio.create_task(
        client.get(
            path, query_string={"wait": "10"}, headers={"If-None-Match": pending.headers["ETag"]}
        )
    )
    await asyncio.sleep(0.1)
    await provider.deliver("action_required")
    woken = await asyncio.wait_for(waiting, timeout=5)
    assert (await woken.get_json())["status"] == "action_required"
    now = await read_twice(client, path)
    await same(woken, now)


async def test_a_kept_answer_ends_with_the_action_window(
    client: Any, partner: Partner, provider: Provider, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    assert (await (await read_twice(client, f"/api/v1/status/{token}")).get_json())[
        "status"
    ] == "action_required"
    page = await read_twice(client, f"/pay/{token}")
    assert 'id="bank-form"' in (await page.get_data(as_text=True))
    clock.advance(3600)  # the window's end: nothing written, the answers change
    status = await client.get(f"/api/v1/status/{token}")
    assert (await status.get_json())["reason"] == "action_timeout"
    assert (await client.get(f"/pay/{token}")).status_code == 410


async def test_an_expired_token_is_refused_though_its_answers_were_kept(
    client: Any, partner: Partner, provider: Provider, clock: FakeClock
) -> None:
    token = await partner.token()
    await read_twice(client, f"/api/v1/status/{token}")
    await read_twice(client, f"/pay/{token}")
    clock.advance(6 * 3600 + 1)
    assert (await client.get(f"/api/v1/status/{token}")).status_code == 404
    assert (await client.get(f"/pay/{token}")).status_code == 404


async def test_a_page_is_kept_per_address_language_and_frame(
    app: Any, client: Any, partner: Partner, provider: Provider
) -> None:
    token = await partner.token()
    await provider.deliver("action_required", interaction=redirect(params={"PaReq": "first"}))
    english = await read_twice(client, f"/pay/{token}")
    russian = await read_twice(client, f"/pay/{token}", headers={"Accept-Language": "ru"})
    chosen = await read_twice(client, f"/pay/{token}", query_string={"lang": "ru"})
    framed = await read_twice(client, f"/pay/{token}", headers={"Sec-Fetch-Dest": "iframe"})
    assert '<html lang="en">' in await english.get_data(as_text=True)
    assert '<html lang="ru">' in await russian.get_data(as_text=True)
    assert '<html lang="ru">' in await chosen.get_data(as_text=True)
    assert "X-Frame-Options" in english.headers and "X-Frame-Options" in framed.headers
    assert counted(app, "page", "built") == 4
    assert counted(app, "page", "kept") == 4
    # A new bank step drops every kept page of the session.
    await provider.deliver("action_required", interaction=redirect(params={"PaReq": "second"}))
    for headers in ({}, {"Accept-Language": "ru"}):
        html = await (await client.get(f"/pay/{token}", headers=headers)).get_data(as_text=True)
        assert 'value="second"' in html and 'value="first"' not in html


async def test_a_head_and_a_return_are_never_answered_from_what_was_kept(
    app: Any, client: Any, partner: Partner, provider: Provider
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    await read_twice(client, f"/pay/{token}")
    kept = counted(app, "page", "kept")
    assert (await client.head(f"/pay/{token}")).status_code == 200
    assert counted(app, "page", "kept") == kept
    back = await client.get(f"/pay/{token}/return")
    assert 'id="bank-form"' not in await back.get_data(as_text=True)
    after = await client.get(f"/pay/{token}")  # the return changed the session: built anew
    assert 'id="bank-form"' not in await after.get_data(as_text=True)


async def test_an_outcome_page_with_a_link_to_the_shop_is_built_every_time(
    configured: Any, clock: FakeClock
) -> None:
    async with configured(RETURN_URL="https://shop.test/back", RETURN_SECRET="r" * 32) as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("payment_finished")
        path = f"/pay/{token}?returned=1"
        first = await bridge.client.get(path)
        clock.advance(5)
        second = await bridge.client.get(path)
        links = [
            re.findall(r"ts=(\d+)", await answer.get_data(as_text=True))
            for answer in (first, second)
        ]
        assert links[0] and links[1] and links[0] != links[1]  # the link says when it was made
        assert counted(bridge.app, "page", "kept") == 0


async def test_bad_requests_get_the_apps_own_errors_whatever_was_kept(
    client: Any, partner: Partner
) -> None:
    token = await partner.token()
    path = f"/api/v1/status/{token}"
    await read_twice(client, path)
    for query in ({"wait": "31"}, {"wait": "-1"}, {"wait": "x"}):
        answer = await client.get(path, query_string=query)
        assert answer.status_code == 400
        assert (await answer.get_json())["error"]["code"] == "invalid_request"
    assert (await client.get(path + "x")).status_code == 404


# -- the bounded store of answers ---------------------------------------------------------


def built(size: int, until: float | None = None) -> Built:
    return Built(200, ((b"content-type", b"text/html"),), b"x" * size, until)


def test_answers_are_bounded_by_count_and_by_bytes_the_least_recently_used_first() -> None:
    answers = Answers(ChangeFeed(), max_entries=3, max_bytes=64_000)
    for number in range(3):
        answers.put(f"s{number}", "k", built(100), answers.ticket())
    assert answers.get("s0", "k", 0) is not None  # s1 is now the least recently used
    answers.put("s3", "k", built(100), answers.ticket())
    assert answers.get("s1", "k", 0) is None
    assert all(answers.get(s, "k", 0) for s in ("s0", "s2", "s3"))
    assert answers.entries == 3
    for number in range(4, 10):
        answers.put(f"s{number}", "k", built(3_900), answers.ticket())
    assert answers.bytes <= 64_000 / 2 and answers.entries <= 3
    answers.put("huge", "k", built(10_000), answers.ticket())  # over a sixteenth: never kept
    assert answers.get("huge", "k", 0) is None


def test_an_answer_built_while_its_session_changed_is_not_kept() -> None:
    feed = ChangeFeed()
    answers = Answers(feed, max_bytes=64_000)
    ticket = answers.ticket()
    feed.publish("s1")  # the session changed after it was read
    answers.put("s1", "k", built(10), ticket)
    assert answers.get("s1", "k", 0) is None
    answers.put("s2", "k", built(10), ticket)  # another session's change is no matter
    assert answers.get("s2", "k", 0) is not None
    feed.publish_all()  # news may have been missed: nothing built before is kept
    answers.put("s3", "k", built(10), ticket)
    assert answers.get("s3", "k", 0) is None and answers.entries == 0


def test_an_answer_goes_stale_by_itself_at_its_time() -> None:
    answers = Answers(ChangeFeed(), max_bytes=64_000)
    answers.put("s1", "k", built(10, until=100.0), answers.ticket())
    assert answers.get("s1", "k", 99.9) is not None
    assert answers.get("s1", "k", 100.0) is None
    assert answers.entries == 0 and answers.bytes == 0


async def test_caught_up_has_heard_every_change_another_process_committed(
    database_url: str,
) -> None:
    """Two stores on one database stand for two processes: once ``caught_up`` returns, the
    other's commit has been published here, with nothing else awaited in between."""
    writer, reader = open_store(database_url), open_store(database_url)
    await writer.open()
    await reader.open()
    heard: list[str | None] = []
    reader.changes.subscribe(heard.append)
    try:
        for number in range(30):
            session_id = f"ps_heard_{number}"
            await writer.update_session(
                session_id, lambda _, s=session_id: lifecycle.new_session(s, 1.0)
            )
            assert await reader.caught_up()
            assert session_id in heard or None in heard, number
    finally:
        await writer.close()
        await reader.close()


async def test_a_long_poll_refused_after_the_request_was_read_still_gets_its_answer(
    configured: Any,
) -> None:
    """app.front starts watching for a hang-up (reading the request) before the status route
    may refuse; the app then answers the refusal all the same."""
    async with configured(STATUS_RATE_LIMIT=2) as bridge:
        token = await bridge.partner.token()
        path = f"/api/v1/status/{token}"
        codes = [
            (await asyncio.wait_for(bridge.client.get(path, query_string={"wait": "1"}), 5))
            for _ in range(3)
        ]
        assert [answer.status_code for answer in codes] == [200, 200, 429]
        assert (await codes[-1].get_json())["error"]["code"] == "too_many_requests"


async def test_keeping_can_be_switched_off_and_answers_stay_the_same(configured: Any) -> None:
    async with configured(KEPT_ANSWERS_MB=0) as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("action_required")
        await read_twice(bridge.client, f"/pay/{token}")
        await read_twice(bridge.client, f"/api/v1/status/{token}")
        assert counted(bridge.app, "page", "kept") == counted(bridge.app, "status", "kept") == 0
        assert counted(bridge.app, "page", "built") == counted(bridge.app, "status", "built") == 2


async def test_a_session_retention_deletes_is_not_answered_as_kept(
    configured: Any, clock: FakeClock
) -> None:
    """Deleting a finished session is a change like any other: what was kept of it goes, in
    every process (here: a token minted late in the retention period)."""
    async with configured(TOKEN_TTL=6 * 3600, RETENTION_DAYS=1) as bridge:
        await bridge.provider.deliver("payment_finished")
        clock.advance(86_400 - 3600)
        token = await bridge.partner.token()
        path = f"/api/v1/status/{token}"
        assert (await (await read_twice(bridge.client, path)).get_json())["status"] == "succeeded"
        await read_twice(bridge.client, f"/pay/{token}?returned=1")
        clock.advance(2 * 3600)
        assert await bridge.app.extensions["bridge"].forget_old() > 0
        assert (await bridge.client.get(path)).status_code == 404
        assert (await bridge.client.get(f"/pay/{token}?returned=1")).status_code == 404


async def test_what_a_request_chooses_is_counted_and_one_session_keeps_few_answers(
    app: Any, client: Any, partner: Partner, provider: Provider
) -> None:
    """A customer can vary a page's query, language or host at will: each variant kept counts
    its whole key, and one session keeps at most a few, so nobody's answers push out
    everyone else's nor pass the memory bound."""
    token = await partner.token()
    await provider.deliver("action_required")
    answers = app.extensions["bridge"].answers
    for number in range(40):
        junk = f"{number}-" + "j" * 5_000
        assert (await client.get(f"/pay/{token}", query_string={"x": junk})).status_code == 200
        assert (await client.get(f"/api/v1/status/{token}", headers={"Host": junk})).status_code
    assert answers.entries <= MAX_PER_SESSION
    assert answers.bytes >= answers.entries * 5_000  # the keys are counted


async def test_a_long_poll_that_fails_while_held_is_answered_at_once(
    app: Any, client: Any, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storage gone for a moment while a long-poll is held: the app answers at once, rather
    than holding the request a second time."""
    from app.store import StorageUnavailableError

    token = await partner.token()
    the_bridge = app.extensions["bridge"]
    path = f"/api/v1/status/{token}"
    etag = (await client.get(path)).headers["ETag"]
    waiting = asyncio.create_task(
        client.get(path, query_string={"wait": "30"}, headers={"If-None-Match": etag})
    )
    await asyncio.sleep(0.2)

    working = the_bridge.store.get_session

    async def down_once(session_id: str) -> Any:
        monkeypatch.setattr(the_bridge.store, "get_session", working)
        raise StorageUnavailableError("down")

    monkeypatch.setattr(the_bridge.store, "get_session", down_once)
    session_id = the_bridge.tokens.read(token).session_id
    the_bridge.store.changes.publish(session_id)  # wakes the hold, whose read fails once
    answer = await asyncio.wait_for(waiting, timeout=5)
    assert answer.status_code == 304  # what the app found, now


async def test_kept_pages_share_the_page_script_and_are_counted_without_it(
    app: Any, client: Any, partner: Partner, provider: Provider
) -> None:
    """Every page carries the same inline script (12 KB of its 17): kept pages hold one copy of
    it between them, and the memory bound counts what is theirs alone."""
    ids = ["ps_a", "ps_b"]
    tokens = [await partner.token(session_id) for session_id in ids]
    for session_id in ids:
        await provider.deliver("action_required", session_id)
    pages = [await read_twice(client, f"/pay/{token}") for token in tokens]
    answers = app.extensions["bridge"].answers
    kept = [next(iter(answers._sessions[session_id].values())) for session_id in ids]
    script = security.page_script(app).encode()
    assert kept[0].shared is kept[1].shared and kept[0].shared == script
    for page, built in zip(pages, kept, strict=True):
        body = await page.get_data()
        assert built.whole == body
        headers = sum(len(name) + len(value) for name, value in built.headers)
        assert built.size == len(body) - len(script) + headers
