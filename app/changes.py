"""Change notices in this process: who waits on which session, and who must forget it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from weakref import WeakSet


class ChangeFeed:
    """Waiters subscribe before they read, so a change between read and wait is never missed."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._subscribers: list[Callable[[str | None], None]] = []
        self.draining = False  # the server is shutting down: answer now, wait no more
        _FEEDS.add(self)

    def subscribe(self, changed: Callable[[str | None], None]) -> None:
        """Call ``changed(session_id)`` on every notice, before any waiter wakes;
        ``changed(None)`` when any session may have changed."""
        self._subscribers.append(changed)

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    def publish_all(self) -> None:
        """Any session may have changed (news may have been missed): every waiter reads again."""
        for changed in self._subscribers:
            changed(None)
        for session_id in list(self._waiters):
            self._wake(session_id)

    def publish(self, session_id: str) -> None:
        for changed in self._subscribers:
            changed(session_id)
        self._wake(session_id)

    def _wake(self, session_id: str) -> None:
        for waiter in self._waiters.pop(session_id, ()):
            _settle(waiter)

    def watch(self, session_id: str) -> Watch:
        """``with feed.watch(session_id) as changed:``, a future that completes on the
        session's next change; unsubscribed on exit."""
        return Watch(self._waiters, session_id)


class Watch:
    """One waiter's subscription (a class, not a generator: a held long-poll keeps it)."""

    __slots__ = ("_waiters", "_session_id", "_waiter")

    def __init__(self, waiters: dict[str, set[asyncio.Future[None]]], session_id: str) -> None:
        self._waiters = waiters
        self._session_id = session_id
        self._waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __enter__(self) -> asyncio.Future[None]:
        self._waiters.setdefault(self._session_id, set()).add(self._waiter)
        return self._waiter

    def __exit__(self, *_: object) -> None:
        waiters = self._waiters.get(self._session_id)
        if waiters is not None:
            waiters.discard(self._waiter)
            if not waiters:
                del self._waiters[self._session_id]
        self._waiter.cancel()


def _settle(waiter: asyncio.Future[None], *_: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


_FEEDS: WeakSet[ChangeFeed] = WeakSet()


def drain_all() -> None:
    """The server is shutting down: every waiter of this process answers with what it has, so
    a long-poll or an event stream ends cleanly instead of being cut off."""
    for feed in list(_FEEDS):
        if not feed.draining:
            feed.draining = True
            feed.publish_all()
