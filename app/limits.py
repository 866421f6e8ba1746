"""Rate limits (429 with ``Retry-After``): the status API per token, minting per partner key,
what the customer pages' scripts ask of the bridge (the bank step's holder, handoffs) per token.

GCRA (the generic cell rate algorithm): ``per_minute`` requests may come at once, then one
every ``60 / per_minute`` seconds. Checked only where a limit guards (a library of hooks would
run on every request of every route).
Limits live in each process: with ``--workers N`` a client may get up to N times the limit,
which still stops a runaway client. Keys are what a view has verified (a token that checked
out, a partner key, a client address), never what a client merely sent, and a limiter keeps at
most ``keys`` of them: the oldest go first.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .refusals import TooManyRequestsError

PERIOD = 60.0
KEYS = 100_000


class RateLimiter:
    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, keys: int = KEYS
    ) -> None:
        self.per_minute = per_minute
        self._interval = PERIOD / per_minute if per_minute else 0.0
        self._clock = clock
        self._keys = keys
        self._arrivals: dict[str, float] = {}  # key -> theoretical arrival time

    def __len__(self) -> int:
        return len(self._arrivals)

    def waiting(self, key: str) -> float:
        """Seconds until ``key`` may come again, or 0; nothing is counted."""
        if not self.per_minute:
            return 0.0
        now = self._clock()
        return max(self._arrivals.get(key, now) - now - (PERIOD - self._interval), 0.0)

    def over(self, key: str) -> float:
        """Seconds until ``key`` may come again, or 0 (and the request is counted)."""
        wait = self.waiting(key)
        if wait or not self.per_minute:
            return wait
        now = self._clock()
        arrival = max(self._arrivals.get(key, now), now)
        self._arrivals.pop(key, None)  # re-inserted last: the dict's order is least recent first
        self._arrivals[key] = arrival + self._interval
        if len(self._arrivals) > self._keys:
            self._forget(now)
        return 0.0

    def _forget(self, now: float) -> None:
        """Drop the keys whose limit has run out; if still too many, the least recent half."""
        self._arrivals = {key: at for key, at in self._arrivals.items() if at > now}
        if len(self._arrivals) > self._keys:
            keep = list(self._arrivals.items())[len(self._arrivals) - self._keys // 2 :]
            self._arrivals = dict(keep)

    def check(self, key: str) -> None:
        """Count one request for ``key``; :class:`TooManyRequestsError` when it is over."""
        refuse(self.over(key))


def refuse(wait: float) -> None:
    """:class:`TooManyRequestsError` saying when to come back, unless ``wait`` is 0."""
    if wait:
        raise TooManyRequestsError(wait)
