"""What the bridge learns of bank origins' frames: kept for every instance, on each engine,
looked at cautiously and never more than once an interval."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp import web

from app.banks import LOOK_INTERVAL, Banks, look_at
from app.framing import STALLS_TO_LEARN, BankSteps, Frames
from app.metrics import Metrics
from app.store import StorageUnavailableError, Store

from .conftest import FakeClock, Partner, Provider
from .database import open_store
from .payloads import redirect

ORIGIN = "https://acs.bank.example"


class Looks:
    """A look that answers what it is told and counts who asked."""

    def __init__(self, answer: Frames | None) -> None:
        self.answer = answer
        self.origins: list[str] = []

    async def __call__(self, origin: str) -> Frames | None:
        self.origins.append(origin)
        return self.answer


async def settled(banks: Banks) -> None:
    while banks._looking:
        await asyncio.sleep(0.01)


async def test_a_record_is_kept_per_origin_and_counts_add_up(store: Store) -> None:
    assert await store.bank(ORIGIN) is None
    await store.count_bank_steps(ORIGIN, BankSteps(stalled=1))
    await store.count_bank_steps(ORIGIN, BankSteps(stalled=1, windowed_returns=1))
    record = await store.bank(ORIGIN)
    assert record is not None
    assert (record.stalled, record.framed_returns, record.windowed_returns) == (2, 0, 1)
    assert record.headers is None and record.looked_at is None
    assert await store.bank("https://other.bank.example") is None


async def test_one_look_an_interval_whichever_instance_asks(
    store: Store, database_url: str
) -> None:
    assert await store.claim_bank_look(ORIGIN, 1000.0, 1000.0 - LOOK_INTERVAL)
    other = open_store(database_url)  # another instance on the same database
    await other.open()
    try:
        assert not await other.claim_bank_look(ORIGIN, 1010.0, 1010.0 - LOOK_INTERVAL)
        await store.record_bank_look(ORIGIN, Frames.REFUSED)
        record = await other.bank(ORIGIN)
        assert record is not None and record.headers is Frames.REFUSED
        assert record.looked_at == 1000.0
        later = 1001.0 + LOOK_INTERVAL
        assert await other.claim_bank_look(ORIGIN, later, later - LOOK_INTERVAL)
        await other.record_bank_look(ORIGIN, None)  # that look said nothing sure
        record = await store.bank(ORIGIN)
        assert record is not None and record.headers is None and record.looked_at == later
    finally:
        await other.close()


async def test_banks_look_in_the_background_once_an_interval(
    store: Store, clock: FakeClock
) -> None:
    looks = Looks(Frames.REFUSED)
    metrics = Metrics()
    banks = Banks(store, clock, metrics, allow_http=False, look=looks)
    assert await banks.frames(ORIGIN) is Frames.UNKNOWN
    banks.notice(ORIGIN)
    banks.notice(ORIGIN)
    await settled(banks)
    assert looks.origins == [ORIGIN]
    assert await banks.frames(ORIGIN) is Frames.REFUSED
    assert b'bridge_bank_looks_total{frames="refused"} 1.0' in metrics.exposition()
    # Another instance, within the interval: the store says someone looked.
    elsewhere = Banks(store, clock, Metrics(), allow_http=False, look=looks)
    elsewhere.notice(ORIGIN)
    await settled(elsewhere)
    assert looks.origins == [ORIGIN]
    clock.advance(LOOK_INTERVAL + 1)
    looks.answer = Frames.ALLOWED
    banks.notice(ORIGIN)
    await settled(banks)
    assert looks.origins == [ORIGIN, ORIGIN]
    assert await banks.frames(ORIGIN) is Frames.ALLOWED
    # Plain http is never looked at, unless insecure bank URLs are allowed (demo, tests).
    banks.notice("http://acs.bank.example")
    await settled(banks)
    assert looks.origins == [ORIGIN, ORIGIN]
    await banks.stop()


async def test_customers_teach_what_the_headers_did_not_show(
    store: Store, clock: FakeClock
) -> None:
    banks = Banks(store, clock, Metrics(), allow_http=False, look=Looks(Frames.ALLOWED))
    banks.notice(ORIGIN)
    await settled(banks)
    assert await banks.frames(ORIGIN) is Frames.ALLOWED
    for _ in range(STALLS_TO_LEARN):
        await banks.count(ORIGIN, BankSteps(stalled=1))
    await banks.count(ORIGIN, BankSteps(windowed_returns=1))
    assert await banks.frames(ORIGIN) is Frames.REFUSED
    await banks.count(ORIGIN, BankSteps(framed_returns=1))
    assert await banks.frames(ORIGIN) is Frames.ALLOWED


async def test_a_look_carries_no_customer_data() -> None:
    """The origin's root alone: no path, query, cookie or referrer; no redirect followed."""
    seen: list[web.Request] = []
    state = {"kind": ""}

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        kind = state["kind"]
        if kind == "refuses":
            return web.Response(text="x" * 100_000, headers={"X-Frame-Options": "DENY"})
        if kind == "moves":
            raise web.HTTPFound("/elsewhere")
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    origin = f"http://127.0.0.1:{port}"
    try:
        for kind, expected in (
            ("refuses", Frames.REFUSED),
            ("allows", Frames.ALLOWED),
            ("moves", None),
        ):
            state["kind"] = kind
            assert await look_at(origin) is expected
        assert [request.path_qs for request in seen] == ["/", "/", "/"]
        for request in seen:
            assert "Cookie" not in request.headers and "Referer" not in request.headers
    finally:
        await runner.cleanup()


def bank_frames(page: str) -> str:
    found = re.search(r'"bank_frames": "(\w+)"', page)
    assert found, page
    return found[1]


async def test_customers_teach_the_bridge_through_its_pages(
    client: Any, provider: Provider, partner: Partner
) -> None:
    """Framed steps taken to a window after the wait, and a return in a window, make the next
    bank page say the bank refuses frames; a return inside a frame says it allows them."""
    tokens = []
    for number in range(STALLS_TO_LEARN + 1):
        session_id = f"ps_{number}"
        tokens.append(await partner.token(session_id))
        await provider.deliver("action_required", session_id, interaction=redirect())
    first = await client.get(f"/pay/{tokens[0]}")
    assert bank_frames(await first.get_data(as_text=True)) == "unknown"
    for token in tokens[:STALLS_TO_LEARN]:
        window = await client.get(f"/pay/{token}?window=popup&after=stall")
        assert bank_frames(await window.get_data(as_text=True)) == "unknown"
    await client.post(f"/pay/{tokens[0]}/return", headers={"Sec-Fetch-Dest": "document"})
    await client.post(f"/pay/{tokens[0]}/return", headers={"Sec-Fetch-Dest": "document"})
    learned = await client.get(f"/pay/{tokens[-1]}")
    assert bank_frames(await learned.get_data(as_text=True)) == "refused"
    await client.post(f"/pay/{tokens[1]}/return", headers={"Sec-Fetch-Dest": "iframe"})
    again = await client.get(f"/pay/{tokens[-1]}?lang=en")
    assert bank_frames(await again.get_data(as_text=True)) == "allowed"


async def test_a_look_storage_missed_is_tried_at_the_next_notice(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks = Looks(Frames.REFUSED)
    banks = Banks(store, clock, Metrics(), allow_http=False, look=looks)
    claim = store.claim_bank_look

    async def unavailable(origin: str, now: float, since: float) -> bool:
        raise StorageUnavailableError("down")

    monkeypatch.setattr(store, "claim_bank_look", unavailable)
    banks.notice(ORIGIN)
    await settled(banks)
    assert looks.origins == []
    monkeypatch.setattr(store, "claim_bank_look", claim)
    banks.notice(ORIGIN)
    await settled(banks)
    assert looks.origins == [ORIGIN]
    assert await banks.frames(ORIGIN) is Frames.REFUSED
