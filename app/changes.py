"""Change notices in this process: who waits on which session, and who must forget it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from weakref import WeakSet

TICK = 0.1  # seconds: how late a held long-poll's time may run out


class ChangeFeed:
    """Waiters subscribe before they read, so a change between read and wait is never missed."""

    def __init__(self) -> None:
        # A list a session: most have one waiter, and an empty set alone outweighs a list.
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._subscribers: list[Callable[[str | None], None]] = []
        self._alarms: dict[int, list[asyncio.Future[None]]] = {}  # tick -> waiters to wake
        self.draining = False  # the server is shutting down: answer now, wait no more
        _FEEDS.add(self)

    def subscribe(self, changed: Callable[[str | None], None]) -> None:
        """Call ``changed(session_id)`` on every notice, before any waiter wakes;
        ``changed(None)`` when any session may have changed."""
        self._subscribers.append(changed)

    def wake_by(self, waiter: asyncio.Future[None], seconds: float) -> None:
        """Complete ``waiter`` at most :data:`TICK` after ``seconds`` from now, unless it is
        done before: one timer a tick for every waiter whose time ends in it, not one each
        (each timer is an object of the loop's, and thousands of long-polls may be held)."""
        loop = asyncio.get_running_loop()
        tick = math.ceil((loop.time() + seconds) / TICK)
        alarm = self._alarms.get(tick)
        if alarm is None:
            alarm = self._alarms[tick] = []
            loop.call_at(tick * TICK, self._ring, tick)
        alarm.append(waiter)

    def _ring(self, tick: int) -> None:
        for waiter in self._alarms.pop(tick, ()):
            settle(waiter)

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
            settle(waiter)

    def watch(self, session_id: str) -> Watch:
        """``with feed.watch(session_id) as changed:``, a future that completes on the
        session's next change; unsubscribed on exit."""
        return Watch(self._waiters, session_id)


class Watch:
    """One waiter's subscription (a class, not a generator: a held long-poll keeps it)."""

    __slots__ = ("_waiters", "_session_id", "_waiter")

    def __init__(self, waiters: dict[str, list[asyncio.Future[None]]], session_id: str) -> None:
        self._waiters = waiters
        self._session_id = session_id
        self._waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __enter__(self) -> asyncio.Future[None]:
        self._waiters.setdefault(self._session_id, []).append(self._waiter)
        return self._waiter

    def __exit__(self, *_: object) -> None:
        waiters = self._waiters.get(self._session_id)
        if waiters is not None and self._waiter in waiters:
            waiters.remove(self._waiter)
            if not waiters:
                del self._waiters[self._session_id]
        self._waiter.cancel()


def settle(waiter: asyncio.Future[None], *_: object) -> None:
    """Wake ``waiter`` unless it is done (usable as a timer's or a future's callback)."""
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
