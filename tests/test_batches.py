"""Writes gathered into batches (app.batches), against a write that is held by hand."""

from __future__ import annotations

import asyncio

import pytest

from app.batches import Batches


class HeldWrite:
    """A write that doubles each item once ``release`` is set, failing with ``failure`` when
    one is given; the batches it was given, in order."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return [item * 2 for item in items]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_quiet_callers_item_is_written_at_once_alone() -> None:
    write = HeldWrite()
    write.release.set()
    batches = Batches(write)
    assert await batches.add(1) == 2
    assert await batches.add(2) == 4
    assert write.batches == [[1], [2]]


async def test_items_that_come_during_a_write_go_together_in_the_next() -> None:
    write = HeldWrite()
    batches = Batches(write)
    first = asyncio.create_task(batches.add(1))
    await settle()
    assert write.batches == [[1]]
    later = [asyncio.create_task(batches.add(item)) for item in (2, 3, 4)]
    await settle()
    assert write.batches == [[1]]  # one write at a time
    write.release.set()
    assert await first == 2
    assert await asyncio.gather(*later) == [4, 6, 8]
    assert write.batches == [[1], [2, 3, 4]]


async def test_a_failed_write_fails_its_batch_alone() -> None:
    write = HeldWrite()
    batches = Batches(write)
    failing = [asyncio.create_task(batches.add(item)) for item in (1, 2)]
    await settle()
    write.failure = RuntimeError("the storage is away")
    write.release.set()
    for task in failing:
        with pytest.raises(RuntimeError, match="the storage is away"):
            await task
    write.failure = None
    assert await batches.add(3) == 6
    assert write.batches == [[1, 2], [3]]


async def test_a_write_answering_for_too_few_items_fails_its_batch() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batches = Batches(short)
    added = [asyncio.create_task(batches.add(item)) for item in (1, 2)]
    for task in added:
        with pytest.raises(ValueError):
            await task


async def writing_and_gathered(batches: Batches[int, int]) -> list[asyncio.Task[int]]:
    """Item 1 being written, item 2 gathered for the next write."""
    added = []
    for item in (1, 2):
        added.append(asyncio.create_task(batches.add(item)))
        await settle()
    return added


async def test_a_cancelled_callers_item_is_written_all_the_same() -> None:
    write = HeldWrite()
    batches = Batches(write)
    first, gone = await writing_and_gathered(batches)
    gone.cancel()
    write.release.set()
    assert await first == 2
    await settle()
    assert write.batches == [[1], [2]]
    assert gone.cancelled()


async def test_closing_cuts_short_the_write_and_cancels_its_callers_and_the_gathered() -> None:
    write = HeldWrite()
    batches = Batches(write)
    writing, gathered = await writing_and_gathered(batches)
    await batches.close()
    for task in (writing, gathered):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [t for t in asyncio.all_tasks() if t.get_name() == "batch writer"] == []
    write.release.set()
    assert await batches.add(3) == 6  # a later item starts a writer again
    assert write.batches == [[1], [3]]


async def test_closing_before_the_writer_ran_cancels_its_callers_and_leaves_it_usable() -> None:
    """A writer task made but not yet run, cancelled, never runs its own clean-up: closing
    does it, so no caller waits for ever and a later item is written."""

    async def write(items: list[int]) -> list[int]:
        return [item * 2 for item in items]

    batches: Batches[int, int] = Batches(write)
    caller = asyncio.create_task(batches.add(1))
    await asyncio.sleep(0)  # the caller gathered its item; the writer has not run
    await batches.close()
    done, _ = await asyncio.wait([caller], timeout=5)
    assert caller in done and caller.cancelled()
    async with asyncio.timeout(5):
        assert await batches.add(2) == 4
