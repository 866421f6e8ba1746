"""Rate limits (429 with ``Retry-After``): the status API per token, minting per partner key.

GCRA (the generic cell rate algorithm): ``per_minute`` requests may come at once, then one
every ``60 / per_minute`` seconds. Checked only in the two views it guards: quart-rate-limiter
did the same with hooks on every request of every route, a tenth of the status route's time.
Limits live in each process: with ``--workers N`` a client may get up to N times the limit,
which still stops a runaway client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .errors import APIError

PERIOD = 60.0
_FORGET_AFTER = 100_000  # keys kept before the expired ones are dropped


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._interval = PERIOD / per_minute if per_minute else 0.0
        self._clock = clock
        self._arrivals: dict[str, float] = {}  # key -> theoretical arrival time

    def check(self, key: str) -> None:
        """Count one request for ``key``; a 429 ``APIError`` when it is over the limit."""
        if not self.per_minute:
            return
        now = self._clock()
        arrival = max(self._arrivals.get(key, now), now)
        wait = arrival - now - (PERIOD - self._interval)
        if wait > 0:
            raise APIError(
                429,
                "too_many_requests",
                "too many requests; try again later",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        self._arrivals[key] = arrival + self._interval
        if len(self._arrivals) > _FORGET_AFTER:
            self._arrivals = {k: t for k, t in self._arrivals.items() if t > now}
