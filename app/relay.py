"""The relay: every webhook the bridge accepted goes on to the partner's backend
(``BRIDGE_RELAY_URL``), byte for byte, with the provider's ``X-PARTNER-SIGN``.

Each delivery was recorded in the transaction that stored its webhook, so a webhook answered
200 is relayed even if the process dies right after. Every process runs a sender; a sender
*claims* due deliveries in the database for one attempt's time, so no delivery has two attempts
in flight, whatever the number of processes or instances, and a claim that a dead process left
behind lapses by itself. A session's deliveries go out in the order they were received: only
the oldest pending one of a session is ever due. Sessions do not wait for each other: each
attempt runs on its own, and a free connection is filled as soon as one is done. Outcomes
that finish close together are written together (:mod:`app.batches`): one write for all that
finished while the write before was in flight, none waiting when the relay is quiet.

aiohttp sends them: its pool bounds the connections to the partner, and every attempt is
bounded in time as a whole (connect, send, answer). The answer is read to its end (64 KB at
most) so its connection carries the next delivery. (aiohttp rather than httpx: the same job
at a fraction of the CPU per request, measured in docs/benchmarks.md.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import aiohttp
from standardwebhooks import Webhook

from .batches import Batches
from .config import Settings
from .metrics import Metrics
from .store import Attempt, DeliveryState, RelayJob, StorageUnavailableError, Store
from .tasks import stopped

log = logging.getLogger(__name__)

FIRST_DELAY = 1.0  # seconds before the second attempt; it doubles up to BRIDGE_RELAY_MAX_DELAY
CLAIM_MARGIN = 5.0  # a claim outlives its attempt's time limit by this much
CONNECTIONS = 16  # to the partner at once, and so deliveries at the partner at a time
FINAL_WRITE = 5.0  # seconds stopping waits for the outcomes the partner gave already
LOOK_AGAIN = 1.0  # seconds between looks for due deliveries (other processes', retries)
BACKLOG_EVERY = 5.0  # seconds between counts of the pending deliveries, for the metrics
ANSWER_READ_BYTES = 64 * 1024  # of a partner's answer, read and dropped; a longer one closes
# The answers whose Retry-After asks for a pause (RFC 9110: too many requests, unavailable).
PAUSING = frozenset({429, 503})


def next_attempt(
    *,
    attempts: int,
    retry_from: float,
    now: float,
    max_delay: float,
    max_age: float,
    jitter: float,
    at_least: float = 0.0,
) -> float | None:
    """When to try again after ``attempts`` failed ones (``jitter`` in [0, 1) spreads the
    retries of many deliveries), no sooner than ``at_least`` seconds from ``now`` (the pause
    the partner asked for, within ``max_delay`` too), or ``None`` when that would be past
    ``max_age`` since the delivery was received (or put back in line). Pure."""
    delay = min(max_delay, FIRST_DELAY * 2 ** min(attempts - 1, 32)) * (0.5 + jitter / 2)
    later = now + max(delay, min(at_least, max_delay))
    return later if later <= retry_from + max_age else None


def retry_after(status: int | None, value: str | None, now: float) -> float:
    """The pause in seconds a partner's answer asks for: its ``Retry-After`` on a 429 or 503,
    delta seconds or an HTTP date (all three forms RFC 9110 names), against ``now``; 0 when it
    asks for none or says something else. Pure."""
    if status not in PAUSING or value is None:
        return 0.0
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) <= 12 else 1e12  # longer: as long as there is
    try:
        moment = parsedate_to_datetime(value)
    except (ValueError, TypeError, OverflowError, IndexError):
        return 0.0
    if moment.tzinfo is None:  # asctime's form, which is GMT
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - now)


class Relay:
    """Sends due deliveries until stopped; ``wake()`` when one was just recorded here."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> None:
        assert settings.relay_url is not None
        self.url = settings.relay_url
        self._store = store
        self._settings = settings
        self._clock = clock
        self._metrics = metrics
        self._client: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        self._signers = tuple(Webhook(secret) for secret in settings.relay_secrets)
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()  # attempts, outcomes being written too
        # Attempts at the partner now: each holds one of its connections. (Not by delivery: a
        # delivery whose claim lapsed while its attempt was out may be at the partner twice.)
        self._posting: set[asyncio.Task[None]] = set()
        # The store's method is looked up at each write, not once.
        self._outcomes: Batches[Attempt, bool] = Batches(
            lambda attempts: self._store.finish_attempts(attempts)
        )
        self._backlog_counted = -BACKLOG_EVERY

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS),
            timeout=aiohttp.ClientTimeout(total=self._settings.relay_timeout),
            # Not trust_env: it would also send ~/.netrc's credentials to the partner. The
            # proxy the environment names is looked up here instead.
            trust_env=False,
        )
        self._proxy = proxy_for(self.url)
        self._task = asyncio.create_task(self._run(), name="relay sender")

    async def stop(self) -> None:
        if self._task is not None:
            await stopped(self._task)
        if self._client is not None:
            await self._client.close()

    def wake(self) -> None:
        self._due.set()

    async def send_due(self, limit: int = CONNECTIONS) -> list[asyncio.Task[None]]:
        """Claim at most ``limit`` deliveries that are due and start an attempt of each; the
        attempts run on by themselves (a slow one holds up no other)."""
        now = self._clock()
        claim = now + self._settings.relay_timeout + CLAIM_MARGIN
        jobs = await self._store.claim_deliveries(now, claim, limit)
        started = []
        for job in jobs:
            task = asyncio.create_task(self._attempt(job), name=f"relay delivery {job.message_id}")
            self._posting.add(task)
            self._in_flight.add(task)
            task.add_done_callback(self._attempted)
            started.append(task)
        return started

    def _attempted(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("a relay attempt failed: %r", error, exc_info=error)  # its claim lapses
        self._due.set()  # a connection is free, and the session's next delivery may be due

    async def _run(self) -> None:
        try:
            while True:
                self._due.clear()
                free = CONNECTIONS - len(self._posting)
                started = []
                try:
                    if free > 0:
                        started = await self.send_due(free)
                    await self._count_backlog()
                except Exception:  # storage trouble or worse: the claims lapse, the next look tries
                    log.exception("the relay's round failed")
                if not started:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(LOOK_AGAIN):
                            await self._due.wait()
        finally:
            # Stopped: the attempts at the partner end here; their claims lapse by themselves
            # (the partner may still be reading one, so no other process may start it sooner).
            # The outcomes the partner gave already are written (the store closes after the
            # relay), for FINAL_WRITE seconds at most: past that, their claims lapse too.
            for task in list(self._posting):
                task.cancel()
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FINAL_WRITE):
                        await asyncio.gather(*self._in_flight, return_exceptions=True)
            finally:  # even if the stop itself is cut short: nothing writes after it
                await self._outcomes.close()
                for task in list(self._in_flight):
                    task.cancel()
                await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _attempt(self, job: RelayJob) -> None:
        try:
            status, pause = await self._post(job)
        finally:
            # Its connection is free: another session's delivery may go while this outcome
            # waits for its commit (this session's next one waits for that commit).
            self._posting.discard(asyncio.current_task())
            self._due.set()
        now = self._clock()
        if status is not None and 200 <= status < 300:
            attempt = Attempt(job, now, status, DeliveryState.DELIVERED, now)
        else:
            settings = self._settings
            later = next_attempt(
                attempts=job.attempts + 1,
                retry_from=job.retry_from,
                now=now,
                max_delay=settings.relay_max_delay,
                max_age=settings.relay_max_age,
                jitter=random.random(),
                at_least=retry_after(status, pause, now),
            )
            state = DeliveryState.PENDING if later else DeliveryState.FAILED
            attempt = Attempt(job, now, status, state, later or now)
        try:
            recorded = await self._outcomes.add(attempt)
        except StorageUnavailableError:  # the claim lapses and the delivery is tried again
            recorded = False
            log.warning("relay delivery %s: its outcome could not be stored", job.message_id)
        # An outcome not on record is no outcome: the delivery is tried again (here or by the
        # process that took its claim), so it is pending; failed pages someone (the alerts).
        self._metrics.relay_attempt(attempt.state if recorded else DeliveryState.PENDING)
        if not recorded:
            return
        if attempt.state == DeliveryState.FAILED:
            log.error(
                "relay delivery %s (%s, session %s) failed for good after %d attempts;"
                " last answer %s",
                job.message_id,
                job.type,
                job.session_id,
                job.attempts + 1,
                status or "none",
            )

    async def _post(self, job: RelayJob) -> tuple[int | None, str | None]:
        """The partner's answer's status code (``None`` when there was no answer in time) and
        its ``Retry-After``. A redirect is an answer like any other that is not 2xx: never
        followed (the partner's URL is the one configured, and the body goes nowhere else)."""
        assert self._client is not None
        headers = message_headers(
            self._signers, job.message_id, job.body, job.attempts + 1, job.signature
        )
        try:
            async with (
                asyncio.timeout(self._settings.relay_timeout),
                self._client.post(
                    self.url,
                    data=job.body,
                    headers=headers,
                    allow_redirects=False,
                    proxy=self._proxy,
                ) as answer,
            ):
                read = 0  # to its end (up to a bound), so the connection carries the next one
                async for chunk in answer.content.iter_chunked(ANSWER_READ_BYTES):
                    read += len(chunk)
                    if read > ANSWER_READ_BYTES:
                        break
                return answer.status, answer.headers.get("Retry-After")
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None, None

    async def _count_backlog(self) -> None:
        now = time.monotonic()
        if now < self._backlog_counted + BACKLOG_EVERY:
            return
        self._backlog_counted = now
        pending, oldest = await self._store.relay_backlog()
        self._metrics.relay_backlog(pending, 0.0 if oldest is None else self._clock() - oldest)


def message_headers(
    signers: Sequence[Webhook],
    message_id: str,
    body: bytes,
    attempt: int,
    provider_signature: str | None = None,
) -> dict[str, str]:
    """A relayed message's headers: Standard Webhooks' (its id, the time of this attempt, one
    ``v1,…`` signature per secret while rotating), the bridge's own id and attempt, and the
    provider's ``X-PARTNER-SIGN`` unchanged on a provider's webhook."""
    now = int(time.time())  # the wall clock, not the bridge's: the partner checks it with its own
    moment = datetime.fromtimestamp(now, UTC)
    headers = {
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(now),
        "webhook-signature": " ".join(signer.sign(message_id, moment, body) for signer in signers),
        "X-Bridge-Delivery-Id": message_id,
        "X-Bridge-Attempt": str(attempt),
    }
    if provider_signature is not None:
        headers["X-PARTNER-SIGN"] = provider_signature
    return headers


def proxy_for(url: str) -> str | None:
    """The proxy ``HTTP_PROXY``, ``HTTPS_PROXY`` and ``NO_PROXY`` name for ``url``, if any (the
    credentials its own URL may carry are the operator's, for that proxy alone)."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)
