"""Answers built once per change of their session, kept in this process.

A session changes a handful of times in its life, while its status and page are read hundreds
of times (long-polls, reloads, embedding pages). What a read builds from a session (the status
answer, a rendered page) is kept here under the session and dropped on the session's change
notice (:attr:`app.store.Store.changes`, which hears every process). A reader first awaits
:meth:`app.store.Store.caught_up`, so nothing kept is older than the database.

Bounded: at most :data:`MAX_ENTRIES` answers and ``BRIDGE_KEPT_ANSWERS_MB`` of bodies and
headers per process, the least recently used session's answers leaving first.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from .changes import ChangeFeed

# A page view as the history notes it: session, step, status, the bank action's time.
Shown = tuple[str, str, str, float | None]
MAX_ENTRIES = 50_000
# Answers one session keeps: its pages vary by what a request chooses (language, frame, query,
# host), so a customer could otherwise fill the memory with variants of one page.
MAX_PER_SESSION = 16
_DROPS_REMEMBERED = 4_096  # sessions dropped recently, to refuse answers built before it


@dataclass(frozen=True, slots=True)
class Built:
    """An answer as it goes out: its status code, headers and body; good until ``until``
    (Unix seconds: the action window's end changes an answer with nothing written). A page's
    body is ``body`` + ``shared`` + ``tail``: ``shared``, what every page holds alike (its
    script), is one object for them all and not counted against the bound."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    until: float | None = None
    etag: str = ""  # a status answer's
    shown: Shown | None = None  # a page's, for the session's history
    shared: bytes = b""
    tail: bytes = b""

    @property
    def whole(self) -> bytes:
        """The body as it goes out."""
        return self.body + self.shared + self.tail if self.shared else self.body

    @property
    def size(self) -> int:
        headers = sum(len(name) + len(value) for name, value in self.headers)
        return len(self.body) + len(self.tail) + headers


class Answers:
    """``answers.get(session_id, key, now)``; ``answers.put(session_id, key, built, since)``
    with ``since`` taken by :meth:`ticket` before the session was read."""

    def __init__(self, feed: ChangeFeed, *, max_bytes: int, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries = 0
        self.bytes = 0
        self._sessions: dict[str, dict[Hashable, Built]] = {}  # oldest used first
        self._epoch = 0  # counts drops
        self._dropped: dict[str, int] = {}  # session -> the epoch of its last drop
        self._forgotten = 0  # the newest epoch no longer in _dropped
        feed.subscribe(self.drop)

    def ticket(self) -> int:
        """Take before reading a session; :meth:`put` refuses what a change made stale since."""
        return self._epoch

    def get(self, session_id: str, key: Hashable, now: float) -> Built | None:
        answers = self._sessions.get(session_id)
        if answers is None:
            return None
        built = answers.get(key)
        if built is None:
            return None
        if built.until is not None and now >= built.until:
            self.drop(session_id)
            return None
        del self._sessions[session_id]  # the most recently used goes last
        self._sessions[session_id] = answers
        return built

    def put(self, session_id: str, key: Hashable, built: Built, since: int) -> None:
        if self._dropped.get(session_id, self._forgotten) > since:
            return  # the session changed while this was built (or may have)
        if built.size + _size(key) > self.max_bytes // 16:
            return
        answers = self._sessions.pop(session_id, None) or {}
        replaced = answers.pop(key, None)
        if replaced is not None:
            self._count(key, replaced, -1)
        while len(answers) >= MAX_PER_SESSION:  # the session's oldest variant goes
            oldest = next(iter(answers))
            self._count(oldest, answers.pop(oldest), -1)
        answers[key] = built
        self._sessions[session_id] = answers
        self._count(key, built, 1)
        while self.entries > self.max_entries or self.bytes > self.max_bytes:
            self._evict(next(iter(self._sessions)))

    def drop(self, session_id: str | None) -> None:
        """The session changed (``None``: any may have); what was built from it goes."""
        self._epoch += 1
        if session_id is None:
            self._forgotten = self._epoch
            self._dropped.clear()
            for each in list(self._sessions):
                self._evict(each)
            return
        self._dropped.pop(session_id, None)
        self._dropped[session_id] = self._epoch
        if len(self._dropped) > _DROPS_REMEMBERED:
            oldest = next(iter(self._dropped))
            self._forgotten = self._dropped.pop(oldest)
        if session_id in self._sessions:
            self._evict(session_id)

    def _evict(self, session_id: str) -> None:
        for key, built in self._sessions.pop(session_id).items():
            self._count(key, built, -1)

    def _count(self, key: Hashable, built: Built, sign: int) -> None:
        self.entries += sign
        self.bytes += sign * (built.size + _size(key))


def _size(key: Hashable) -> int:
    """What a key holds of the request (a query string, a host): counted with its answer."""
    parts = key if isinstance(key, tuple) else (key,)
    return sum(len(part) for part in parts if isinstance(part, str | bytes))
