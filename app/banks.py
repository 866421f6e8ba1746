"""What the bridge learns of bank origins' frames, kept in the store for every instance: a
cautious look at each origin's answer headers, and what customers' bank steps showed
(:mod:`app.framing` decides what it all means).

The look never holds up a webhook's answer or a page: it runs in the background when a bank
instruction names an origin not looked at within :data:`LOOK_INTERVAL`. It carries no customer
data: it asks for the origin's root (``GET /``), never the instruction's path (an ACS path may
carry a transaction's identifiers), query or fields, sends no cookie, no referrer and follows no
redirect, reads the answer's headers alone (at most :data:`HEADERS_LONGEST` bytes a line) and
gives up after :data:`LOOK_SECONDS`. ``https`` only (plain ``http`` with
``BRIDGE_ALLOW_INSECURE_ACS``, for the demo and tests).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from .actions import BankStep, RefusedActionError, customer_action
from .framing import BankSteps, Frames, refused_by, verdict
from .lifecycle import Session
from .metrics import Metrics
from .store import StorageUnavailableError, Store
from .tasks import stopped

log = logging.getLogger(__name__)
LOOK_INTERVAL = 6 * 3600.0  # seconds between two looks at one origin, by any instance
LOOK_SECONDS = 5.0  # the whole look, connection included
HEADERS_LONGEST = 8190  # bytes of one header line the look reads
LOOKS_AT_ONCE = 16  # looks in flight in this process; an origin beyond waits for the next notice
USER_AGENT = "redirect-bridge (frame check; no customer data)"

Look = Callable[[str], Awaitable[Frames | None]]


async def look_at(origin: str) -> Frames | None:
    """What ``origin``'s root answers of frames: refused when its headers forbid framing,
    allowed for a 2xx that does not, ``None`` for anything else (a redirect's or an error's
    headers need not be the pages')."""
    timeout = aiohttp.ClientTimeout(total=LOOK_SECONDS)
    async with (
        aiohttp.ClientSession(
            timeout=timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            max_line_size=HEADERS_LONGEST,
            max_field_size=HEADERS_LONGEST,
        ) as client,
        client.get(
            origin + "/",
            allow_redirects=False,
            headers={"User-Agent": USER_AGENT, "Accept": "text/html"},
        ) as answer,
    ):
        if refused_by(answer.headers.items()):
            return Frames.REFUSED
        return Frames.ALLOWED if 200 <= answer.status < 300 else None


class Banks:
    """Bank origins' frames: what the embedding script is told, and what teaches the bridge."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float],
        metrics: Metrics,
        *,
        allow_http: bool,
        look: Look = look_at,
    ) -> None:
        self._store = store
        self._clock = clock
        self._metrics = metrics
        self._schemes = ("https", "http") if allow_http else ("https",)
        self._look = look
        self._noticed: dict[str, float] = {}  # origin: when this process last asked to look
        self._looking: set[asyncio.Task[None]] = set()

    def notice(self, origin: str) -> None:
        """A bank instruction names ``origin``: look at its headers in the background when
        nobody has lately. Returns at once."""
        now = self._clock()
        if urlsplit(origin).scheme not in self._schemes or len(self._looking) >= LOOKS_AT_ONCE:
            return
        if now - self._noticed.get(origin, -LOOK_INTERVAL) < LOOK_INTERVAL:
            return
        if len(self._noticed) >= 10_000:  # origins come from signed webhooks; still bounded
            self._noticed.clear()
        self._noticed[origin] = now
        task = asyncio.create_task(self._look_once(origin, now), name="bank-look")
        self._looking.add(task)
        task.add_done_callback(self._looking.discard)

    async def _look_once(self, origin: str, now: float) -> None:
        try:
            if not await self._store.claim_bank_look(origin, now, now - LOOK_INTERVAL):
                return  # another instance looked lately
            try:
                frames = await self._look(origin)
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                # Never the origin: logs name no bank address.
                log.info(
                    "a bank origin gave no answer to the frame check (%s)", type(error).__name__
                )
                frames = None
            await self._store.record_bank_look(origin, frames)
            self._metrics.bank_look((frames or Frames.UNKNOWN).value)
        except StorageUnavailableError:
            log.warning("a bank origin's frame check was not stored")
            self._noticed.pop(origin, None)  # the next instruction naming it tries again

    async def frames(self, origin: str) -> Frames:
        """What the embedding script is told of ``origin``'s frames."""
        try:
            return verdict(await self._store.bank(origin))
        except StorageUnavailableError:
            return Frames.UNKNOWN

    def origin_of(self, session: Session) -> str | None:
        """The bank origin a session's instruction sends the customer to, if it has one."""
        if session.interaction is None:
            return None
        try:
            action = customer_action(session.interaction, allow_http="http" in self._schemes)
        except RefusedActionError:
            return None
        return action.origin if isinstance(action, BankStep) else None

    async def count(self, origin: str, steps: BankSteps) -> None:
        """Add what a customer's step showed to ``origin``'s record (lost on storage trouble:
        the customer is never held up for it)."""
        try:
            await self._store.count_bank_steps(origin, steps)
        except StorageUnavailableError:
            log.warning("a customer's bank step was not counted")

    async def stop(self) -> None:
        for task in list(self._looking):
            await stopped(task)
