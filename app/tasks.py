"""Stopping a background task: cancel it and wait until it has ended."""

from __future__ import annotations

import asyncio
from typing import Any


async def stopped(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end (its own cancellation is the end asked for, not
    an error). A cancellation of the caller while it waits goes on up: stopping is cut short,
    never silently finished (``contextlib.suppress(CancelledError)`` would swallow both)."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        caller = asyncio.current_task()
        if caller is not None and caller.cancelling():
            raise
