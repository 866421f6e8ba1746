"""Wake-ups for long-polls: who waits on which session, in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakSet


class ChangeFeed:
    """Waiters subscribe before they read, so a change between read and wait is never missed."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.draining = False  # the server is shutting down: answer now, wait no more
        _FEEDS.add(self)

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    def publish_all(self) -> None:
        """Wake every waiter to read again (after news may have been missed)."""
        for session_id in list(self._waiters):
            self.publish(session_id)

    def publish(self, session_id: str) -> None:
        for waiter in self._waiters.pop(session_id, ()):
            if not waiter.done():
                waiter.set_result(None)

    @contextmanager
    def watch(self, session_id: str) -> Iterator[asyncio.Future[None]]:
        """A future that completes on the session's next change; unsubscribes on exit."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(session_id, set())
        waiters.add(waiter)
        try:
            yield waiter
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiters.get(session_id) is waiters:
                del self._waiters[session_id]
            waiter.cancel()


_FEEDS: WeakSet[ChangeFeed] = WeakSet()


def drain_all() -> None:
    """The server is shutting down: every waiter of this process answers with what it has, so
    a long-poll or an event stream ends cleanly instead of being cut off."""
    for feed in list(_FEEDS):
        if not feed.draining:
            feed.draining = True
            feed.publish_all()
