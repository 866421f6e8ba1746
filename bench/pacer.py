"""Requests sent at their own times, whatever the server does: an open loop.

wrk (Debian's 4.1) keeps a fixed number of requests in flight, so when the server slows it
slows too and the rate it was asked to hold is not held; nor can it pace (wrk2's ``-R`` is not
in Debian), and a Lua ``delay()`` only waits after an answer, which is the same closed loop.
Here each request of a journey (bench/mix.py) is started when it is due, on a keep-alive
connection free at that moment or a new one, and its time is counted from when it was due, not
from when it left: a server that stalls is charged with the wait of every request due meanwhile.
How late the client itself started requests is recorded too, so a client that could not keep up
is seen, not mistaken for the server.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field

from . import client
from .mix import FINAL, PAGE_DELAY, WAIT, Journey, Request

EXPECTED = {"webhook": {200}, "page": {200}, "return": {200, 303}, "poll": {200, 304}}
EXPECTED |= {"long-poll": {200, 304}, "events": {200}}
IN_FLIGHT = 1024  # requests the client has open at once, held ones aside
TIMEOUT = 30.0  # seconds an answer may take (a long-poll: on top of its wait)
_FINAL_EVENT = re.compile(rb'"status": ?"(?:' + "|".join(FINAL).encode() + rb')"')


@dataclass
class Tally:
    """What one window saw: every request's time from when it was due (ms) by kind, how late
    the client started it, answers by status, what failed."""

    took_ms: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))
    late_ms: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    failed: collections.Counter[str] = field(default_factory=collections.Counter)  # kind, why
    held: collections.Counter[str] = field(default_factory=collections.Counter)  # answered
    accepted: list[str] = field(default_factory=list)  # digests of webhooks answered accepted

    def answered(self, kind: str, status: int) -> None:
        self.statuses[status] += 1
        if status not in EXPECTED[kind]:
            self.failed[f"{kind} {status}"] += 1

    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)


class Pacer:
    """Sends journeys' requests when due; ``tally`` may be replaced at any time (a window)."""

    def __init__(self, port: int) -> None:
        self.port, self.tally, self.pool = port, Tally(), client.Pool(port)
        self.loop = asyncio.get_running_loop()
        self.gate = asyncio.Semaphore(IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.timers = 0  # requests scheduled and not yet started

    def start(self, journey: Journey, starts_at: float) -> None:
        """Schedule ``journey``, whose start is ``starts_at`` on the loop's clock."""
        for planned in journey.requests:
            self._at(starts_at + planned.at, self._send(planned, starts_at + planned.at))
        if journey.watch != "poll":
            watch = self._long_poll if journey.watch == "long-poll" else self._events
            self._at(starts_at + PAGE_DELAY, watch(journey, starts_at + journey.end + 2 * WAIT))

    def _at(self, due: float, work: Coroutine[None, None, None]) -> None:
        def begin() -> None:
            self.timers -= 1
            task = self.loop.create_task(work)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

        self.timers += 1
        self.loop.call_at(due, begin)

    async def idle(self, timeout: float) -> bool:
        """Until every scheduled request has been answered (at most ``timeout`` seconds)."""
        deadline = self.loop.time() + timeout
        while (self.timers or self.tasks) and self.loop.time() < deadline:
            await asyncio.sleep(0.2)
        return not (self.timers or self.tasks)

    async def _send(self, planned: Request, due: float) -> None:
        tally = self.tally
        tally.late_ms.append((self.loop.time() - due) * 1000)
        try:
            async with self.gate:
                answer = await asyncio.wait_for(self.pool.ask(planned.data), TIMEOUT)
        except (OSError, TimeoutError) as error:  # ConnectionError among them
            self.tally.failed[f"{planned.kind} {type(error).__name__}"] += 1
            return
        tally = self.tally  # the window it ended in
        tally.took_ms[planned.kind].append((self.loop.time() - due) * 1000)
        tally.answered(planned.kind, answer.status)
        if planned.kind == "webhook" and answer.status == 200 and b"accepted" in answer.body:
            tally.accepted.append(planned.body_digest)

    async def _long_poll(self, journey: Journey, until: float) -> None:
        """Long-polls one after another, each sending the last ETag, until a final status."""
        path, etag = f"/api/v1/status/{journey.token}?wait={WAIT}", ""
        try:
            connection = await client.connect(self.port)
        except OSError as error:
            self.tally.failed[f"long-poll {type(error).__name__}"] += 1
            return
        try:
            while self.loop.time() < until:
                headers = {"If-None-Match": etag} if etag else {}
                asked = connection.ask(client.request("GET", path, self.port, headers))
                answer = await asyncio.wait_for(asked, WAIT + TIMEOUT)
                self.tally.held["long-poll"] += 1
                self.tally.answered("long-poll", answer.status)
                if answer.status == 304:
                    continue
                if answer.status != 200 or json.loads(answer.body)["status"] in FINAL:
                    return
                etag = answer.headers.get("etag", "")
        except (OSError, TimeoutError) as error:
            self.tally.failed[f"long-poll {type(error).__name__}"] += 1
        finally:
            connection.transport.close()

    async def _events(self, journey: Journey, until: float) -> None:
        """The event stream, read until it tells a final status."""
        path = f"/api/v1/status/{journey.token}/events"
        request = client.request("GET", path, self.port, {"Accept": "text/event-stream"})
        try:
            timeout = max(until - self.loop.time(), 1.0)
            got = await asyncio.wait_for(client.stream(self.port, request, _FINAL_EVENT), timeout)
        except (OSError, TimeoutError) as error:
            self.tally.failed[f"events {type(error).__name__}"] += 1
            return
        status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else 0
        self.tally.held["events"] += 1
        self.tally.answered("events", status)
        if status == 200 and not _FINAL_EVENT.search(got):
            self.tally.failed["events ended before the final status"] += 1

    def close(self) -> None:
        """Whatever is still open is given up."""
        for task in self.tasks:
            task.cancel()
        self.pool.close()
