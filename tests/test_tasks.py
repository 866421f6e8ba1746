"""Stopping background tasks: the task's cancellation is awaited, the caller's is not swallowed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from app.store.postgres import PostgresStore
from app.store.sqlite import SQLiteStore
from app.tasks import stopped


async def _unwinding(ended: asyncio.Event) -> None:
    """A task that takes a while to end once cancelled, as a relay round or a commit does."""
    try:
        await asyncio.sleep(60)
    finally:
        await asyncio.shield(asyncio.sleep(0.2))
        ended.set()


async def _stop_is_cancelled(stop: Callable[[], Awaitable[None]]) -> None:
    stopping = asyncio.create_task(stop())
    await asyncio.sleep(0.05)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping


async def test_stopping_waits_for_the_task_to_end() -> None:
    ended = asyncio.Event()
    task = asyncio.create_task(_unwinding(ended))
    await asyncio.sleep(0)
    await stopped(task)
    assert task.cancelled() and ended.is_set()


async def test_a_caller_cancelled_while_stopping_a_task_is_cancelled() -> None:
    task = asyncio.create_task(_unwinding(asyncio.Event()))
    await asyncio.sleep(0)
    await _stop_is_cancelled(lambda: stopped(task))


async def test_a_task_that_failed_says_so_when_stopped() -> None:
    async def failing() -> None:
        raise ValueError("broken")

    task = asyncio.create_task(failing())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken"):
        await stopped(task)


async def test_stopping_the_bridge_cancelled_midway_is_cancelled(
    config: dict[str, object],
) -> None:
    """Each of the bridge's stops (the relay, the sweeper, the bank looks, the store's
    follower) waits for a task that takes a while to end; the stopper cancelled meanwhile is
    cancelled too, rather than going on as if stopping had finished."""
    from app import create_app

    config = config | {"RELAY_URL": "http://127.0.0.1:9/partner"}
    bridge = create_app(config).extensions["bridge"]
    await bridge.start()
    try:
        for owner, name in [(bridge.relay, "_task"), (bridge, "_sweeper")]:
            await stopped(getattr(owner, name))
            setattr(owner, name, asyncio.create_task(_unwinding(asyncio.Event())))
        if isinstance(bridge.store, SQLiteStore):
            await stopped(bridge.store._follower)
            bridge.store._follower = asyncio.create_task(_unwinding(asyncio.Event()))
        else:
            assert isinstance(bridge.store, PostgresStore)
            bridge.store._tasks.append(asyncio.create_task(_unwinding(asyncio.Event())))
        bridge.banks._looking.add(asyncio.create_task(_unwinding(asyncio.Event())))
        await asyncio.sleep(0)
        await _stop_is_cancelled(bridge.banks.stop)
        await _stop_is_cancelled(bridge.relay.stop)
        await _stop_is_cancelled(bridge.stop)  # at the sweeper, the relay and banks stopped
        await _stop_is_cancelled(bridge.store.close)
    finally:
        await bridge.stop()
