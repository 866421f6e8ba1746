"""Writes gathered into batches, with no timer: each item joins the batch being gathered, and
that batch is written as soon as the write before it is done. A quiet caller's item is written
at once, alone; under load, the items that arrived while a write was in flight go together in
the next, so the time one write takes is the time the next batch gathers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Batches(Generic[Item, Answer]):
    """``await batches.add(item)``: ``item``'s answer from the write of its batch, ``write``
    (one answer per item, in order), one write at a time."""

    def __init__(self, write: Callable[[list[Item]], Awaitable[Sequence[Answer]]]) -> None:
        self._write = write
        self._gathered: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, item: Item) -> Answer:
        """The answer the write of ``item``'s batch gave it, or the error that write raised
        (every item of the batch gets it). A caller cancelled meanwhile leaves its item in
        the batch: it is written all the same."""
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._gathered.append((item, answer))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_batches(), name="batch writer")
        return await answer

    async def close(self) -> None:
        """Cut short the write in flight, if any: its callers, and those whose items were
        gathered for the next, are cancelled."""
        if self._writer is not None:
            self._writer.cancel()
            # Not app.tasks.stopped, which raises when its caller is being cancelled: the relay
            # closes this from its sender's stop, cancelled already, and goes on to end its
            # attempts. gather hands the writer's cancellation back as a value, and a new
            # cancellation of the caller still goes on up.
            await asyncio.gather(self._writer, return_exceptions=True)
        # A writer cancelled before it first ran never reached its own clean-up.
        self._writer = None
        for _, answer in self._gathered:
            answer.cancel()
        self._gathered = []

    async def _write_batches(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Answer]]] = []
        try:
            while self._gathered:
                batch, self._gathered = self._gathered, []
                try:
                    answered = zip(
                        batch, await self._write([item for item, _ in batch]), strict=True
                    )
                    for (_, answer), value in list(answered):
                        if not answer.done():
                            answer.set_result(value)
                except Exception as error:  # the batch fails as a whole; the writer goes on
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                batch = []
        finally:
            self._writer = None
            for _, answer in batch + self._gathered:
                answer.cancel()
            self._gathered = []
