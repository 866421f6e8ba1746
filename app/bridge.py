"""The bridge's operations, in the domain's words: what the views ask for.

Views deal in HTTP; this module puts the store, the tokens, the clock and the state machine
together; :mod:`app.lifecycle` decides.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from . import events, lifecycle
from .answers import Answers, Shown
from .bank_outcomes import BankOutcomes
from .banks import Banks
from .config import DAY, Settings, redacted_url
from .framing import BankSteps, Frames
from .lifecycle import Session
from .limits import RateLimiter
from .metrics import Metrics
from .provider import Webhook
from .relay import Relay
from .store import (
    Changed,
    Delivery,
    DeliveryRecord,
    DeliveryState,
    Event,
    Handoff,
    StorageUnavailableError,
    Store,
    Update,
    open_store,
)
from .tasks import stopped
from .tokens import Minted, Tokens

log = logging.getLogger(__name__)
KEY_GUESSES = 10  # wrong partner keys a minute from one address
BROWSER_REPORTS = 30  # reports a minute from one customer token's pages
BROWSER_EVENTS_KEPT = 40  # browser events one session's history holds; later ones are not stored
FORGET_BATCH = 1_000  # rows one retention transaction deletes, so none holds the writer long
PAGES_REMEMBERED = 10_000  # page views whose history entry this process wrote recently
# How far apart the clocks of two instances may be: one minted a token, another stored its session.
CLOCK_SKEW = 60.0
HANDOFF_TTL = 600.0  # seconds a link that moves the bank step to another browser may be used
# What the pages' scripts may ask of one token a minute: which page holds the step, handoffs.
PAGE_CALLS = 120


@dataclass
class Bridge:
    settings: Settings
    store: Store
    tokens: Tokens
    status_limit: RateLimiter
    token_limit: RateLimiter
    clock: Callable[[], float] = time.time
    metrics: Metrics = field(default_factory=Metrics)
    # Wrong partner keys per client address: a guesser gets a few a minute.
    key_guesses: RateLimiter = field(default_factory=lambda: RateLimiter(KEY_GUESSES))
    # Reports of the bank step per customer token: a page reports a handful.
    browser_limit: RateLimiter = field(default_factory=lambda: RateLimiter(BROWSER_REPORTS))
    page_calls: RateLimiter = field(default_factory=lambda: RateLimiter(PAGE_CALLS))
    relay: Relay | None = None
    answers: Answers = field(init=False)  # built from sessions, dropped as they change
    bank_outcomes: BankOutcomes = field(init=False)  # what came of bank steps, for the metrics
    banks: Banks = field(init=False)  # what is known of bank origins' frames
    _sweeper: asyncio.Task[None] | None = field(default=None, repr=False)
    _pages_seen: dict[Shown, None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self._relays("bridge"):
            self.store.emit = events.emitted
        self.answers = Answers(
            self.store.changes, max_bytes=self.settings.kept_answers_mb * 1024 * 1024
        )
        self.bank_outcomes = BankOutcomes(
            self.store, self.metrics, self.settings.allow_insecure_acs
        )
        self.banks = Banks(
            self.store, self.clock, self.metrics, allow_http=self.settings.allow_insecure_acs
        )

    @classmethod
    def from_settings(cls, settings: Settings, clock: Callable[[], float] = time.time) -> Bridge:
        store = open_store(
            settings.database_url,
            pool_min=settings.db_pool_min,
            pool_max=settings.db_pool_max,
            timeout=settings.db_timeout,
        )
        metrics = Metrics()
        return cls(
            settings=settings,
            store=store,
            tokens=Tokens(settings.secret_keys, settings.token_ttl, clock),
            clock=clock,
            metrics=metrics,
            status_limit=RateLimiter(settings.status_rate_limit),
            token_limit=RateLimiter(settings.token_rate_limit),
            relay=Relay(store, settings, clock, metrics) if settings.relay_url else None,
        )

    async def start(self) -> None:
        for warning in self.settings.warnings:
            log.warning("%s", warning)
        await self.store.open()
        log.info("storage: %s", self.store.describe())
        if self.relay is not None:
            await self.relay.start()
            # Its userinfo and query may carry the partner's credentials.
            relayed = {"provider": "every accepted webhook", "bridge": "the bridge's events"}
            what = " and ".join(relayed[kind] for kind in sorted(self.settings.relay_events))
            log.info("relaying %s to %s", what, redacted_url(self.relay.url))
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="sweep")

    async def stop(self) -> None:
        await self.banks.stop()
        if self.relay is not None:
            await self.relay.stop()
        if self._sweeper is not None:
            await stopped(self._sweeper)
        await self.store.close()

    async def receive_webhook(
        self, body: bytes, webhook: Webhook, signature: str, meaning: bytes
    ) -> Changed:
        """Store a verified webhook durably and move its session on, at most once; with the
        relay on, its delivery to the partner is recorded in the same transaction."""
        changed = await self.store.record_webhook(
            *webhook_write(
                body,
                webhook,
                meaning=meaning,
                received_at=self.clock(),
                relay_signature=signature if self._relays("provider") else None,
                action_timeout=self.settings.action_timeout,
            )
        )
        self.metrics.webhook(
            webhook.type,
            "ignored" if changed.ignored else "duplicate" if changed.duplicate else "accepted",
            changed=changed.before != changed.after,
        )
        self._count_transition(changed)
        if not (changed.duplicate or changed.ignored):
            self._wake_the_relay()
        if changed.after is not None and changed.after != changed.before:
            if origin := self.banks.origin_of(changed.after):
                self.banks.notice(origin)  # in the background: the provider's 200 waits for none
        return changed

    def _relays(self, kind: str) -> bool:
        return self.relay is not None and kind in self.settings.relay_events

    def outdated(self, webhook: Webhook) -> bool:
        """Whether a webhook is older, by the provider's clock, than what retention keeps."""
        horizon = self.clock() - self.settings.retention_days * DAY
        return webhook.updated_at is not None and webhook.updated_at < horizon

    def count_webhook(self, kind: str | None, outcome: str) -> None:
        """Count a webhook the bridge did not store: ``outcome`` is ``ignored`` or the code
        it was refused with (``kind`` is ``None`` when it was refused before being read)."""
        self.metrics.webhook(kind, outcome)

    def partner_key_wait(self, address: str) -> float:
        """Seconds a client at ``address`` waits before any key it sends is read again, or 0:
        a guesser of partner keys gets a few a minute."""
        return self.key_guesses.waiting(address)

    def check_partner_key(self, authorization: str, address: str) -> bool:
        """Whether an ``Authorization`` header carries a partner key (``Bearer``, one of
        ``BRIDGE_API_KEYS``, compared in constant time); a wrong one counts against ``address``."""
        scheme, _, key = authorization.partition(" ")
        matched = False
        for candidate in self.settings.api_keys:  # no early exit: every key is compared
            matched |= hmac.compare_digest(candidate.encode(), key.strip().encode())
        if scheme.lower() != "bearer" or not matched:
            self.key_guesses.over(address)
            return False
        return True

    def count_minting(self, partner: str) -> None:
        """Count a token request of ``partner`` (its Authorization header);
        :class:`app.refusals.TooManyRequestsError` (a 429) once it is over
        ``BRIDGE_TOKEN_RATE_LIMIT``."""
        self.token_limit.check(partner)

    async def mint_token(self, session_id: str, return_url: str | None = None) -> Minted:
        """A customer token; the session becomes known (``pending``) if nothing was heard yet."""
        now = self.clock()
        await self.store.update_session(
            session_id, lambda session: session or lifecycle.new_session(session_id, now)
        )
        return self.tokens.mint(session_id, return_url)

    def token_for(self, session_id: str) -> str:
        """A customer token for a session the bridge knows already: nothing is stored."""
        return self.tokens.mint(session_id).token

    def return_url_of(self, token: str) -> str | None:
        """The return URL a customer token carries, as the partner gave it while minting it;
        ``None`` for a token without one, or a bad token."""
        grant = self.tokens.read(token)
        return None if grant is None else grant.return_url

    def answer_ticket(self) -> int:
        """Take before reading a session for an answer to keep: what a change made stale since
        is not kept (:meth:`app.answers.Answers.put`)."""
        return self.answers.ticket()

    async def session(self, session_id: str) -> Session | None:
        """The session as it stands now, the action window applied."""
        session = await self.store.get_session(session_id)
        return None if session is None else lifecycle.at(session, self.clock())

    async def customer_session(self, token: str) -> Session | None:
        """The session a customer token opens, as it stands now; ``None`` for a bad token.

        A session the bridge has not stored yet is ``pending`` since the token was minted (a
        database restored from before it). One retention deleted after the token was minted
        opens nothing, even once its id is stored anew (minting stores the session first, so
        a session younger than its token was stored again).
        """
        grant = self.tokens.read(token)
        if grant is None:
            self.metrics.token_failures.inc()
            return None
        session = await self.session(grant.session_id)
        if session is None or session.created_at > grant.issued_at + CLOCK_SKEW:
            forgotten = await self.store.forgotten(grant.session_id)
            if forgotten is not None and forgotten.at >= grant.issued_at - CLOCK_SKEW:
                self.metrics.token_failures.inc()
                return None
        return session or lifecycle.new_session(grant.session_id, grant.issued_at)

    async def record_return(self, session_id: str) -> Session:
        """The customer is back from the bank; the session as it stands now."""
        now = self.clock()
        changed = await self.store.update_session(
            session_id,
            lambda session: replace(
                session or lifecycle.new_session(session_id, now), returned_at=now
            ),
            Event(session_id, now, "return", {}),
        )
        await self.bank_outcomes.returned(changed.before, now)
        assert changed.after is not None
        return lifecycle.at(changed.after, now)

    async def cancel(self, session_id: str) -> Session:
        """The customer gives up on a bridge page: ``canceled`` with reason ``customer`` while
        their part is not over (see :func:`app.lifecycle.cancel`), with a ``cancel`` event in
        the history; once it is over, nothing changes. The session as it stands now."""
        now = self.clock()
        changed = await self.store.update_session(
            session_id,
            lambda session: lifecycle.cancel(
                session or lifecycle.new_session(session_id, now), now
            ),
            Event(session_id, now, "cancel", {}),
        )
        self._count_transition(changed)
        await self.bank_outcomes.ended(changed)
        assert changed.after is not None
        return lifecycle.at(changed.after, now)

    def count_browser_report(self, token: str) -> None:
        """Count a report from the pages of ``token`` (one that verified);
        :class:`app.refusals.TooManyRequestsError` (a 429) beyond :data:`BROWSER_REPORTS` a
        minute."""
        self.browser_limit.check(token)

    async def browser_report(self, session: Session, event: str, mode: str | None) -> bool:
        """Note in the history what the customer's browser reported of the bank step: ``bank``
        (the form went, in ``mode``), ``fallback`` (a framed step went to a window), ``handoff``
        (another browser took it). Never more than :data:`BROWSER_EVENTS_KEPT` a session: a
        report beyond is not stored. Whether this one was."""
        report = Event(session.id, self.clock(), "browser", {"event": event, "mode": mode})
        stored = await self.store.add_counted_event(report, BROWSER_EVENTS_KEPT)
        if stored:  # counted as often as kept, a few dozen a session at most
            self.bank_outcomes.reported(session, event)
        return stored

    async def hold_step(self, token: str, session_id: str, page: str, *, take: bool) -> bool:
        """Whether the page ``page`` (an id its own script made) holds the session's bank step
        now: it gets it when no page does, or from whoever does with ``take``. One page at a
        time submits the bank form; :class:`app.refusals.TooManyRequestsError` beyond
        :data:`PAGE_CALLS` a minute for ``token``."""
        self.page_calls.check(token)
        return await self.store.hold_step(session_id, page, self.clock(), take=take)

    async def hand_off(self, token: str, session_id: str) -> tuple[str, float]:
        """A secret that moves the session's bank step to another browser, once, within
        :data:`HANDOFF_TTL`, and when it expires. Only its hash is stored; the browser that
        claims it goes where ``token``'s customer goes (a 429 as :meth:`hold_step`)."""
        self.page_calls.check(token)
        secret = secrets.token_urlsafe(32)
        expires_at = self.clock() + HANDOFF_TTL
        return_url = self.return_url_of(token)
        await self.store.add_handoff(Handoff(_digest(secret), session_id, return_url, expires_at))
        return secret, expires_at

    async def handoff_open(self, secret: str) -> bool | None:
        """Whether a handoff may still be claimed; ``None`` for a secret the bridge never gave."""
        handoff = await self.store.handoff(_digest(secret))
        if handoff is None:
            return None
        return handoff.claimed_at is None and handoff.expires_at > self.clock()

    async def claim_handoff(self, secret: str, page: str) -> str | None:
        """Use a handoff: its session's bank step goes to the page ``page``, and the browser it
        is in gets a token of its own for the session; ``None`` once it is used or expired."""
        claimed = await self.store.claim_handoff(_digest(secret), page, self.clock())
        if claimed is None:
            return None
        log.info("session %s: another browser took the bank step", claimed.session_id)
        return self.tokens.mint(claimed.session_id, claimed.return_url).token

    async def bank_frames(self, origin: str) -> Frames:
        """What the embedding script is told of a bank origin's frames."""
        return await self.banks.frames(origin)

    async def count_bank_step(self, session: Session, steps: BankSteps) -> None:
        """What a customer's bank step showed of its bank's frames, kept for every instance."""
        if origin := self.banks.origin_of(session):
            await self.banks.count(origin, steps)

    async def events(self, session_id: str) -> list[Event] | None:
        """The session's history, oldest first; ``None`` for a session the bridge does not know
        (a known one with nothing in its history yet has an empty one)."""
        history = await self.store.events(session_id)
        if not history and await self.session(session_id) is None:
            return None
        return history

    async def deliveries(
        self,
        state: DeliveryState | None,
        limit: int,
        *,
        session_id: str | None = None,
        before: int | None = None,
    ) -> list[DeliveryRecord]:
        """The relay's deliveries, newest first: at most ``limit``, in ``state`` (every state
        when ``None``), of ``session_id`` (every session's when ``None``), each listed before
        the row ``before`` (from the newest when ``None``)."""
        return await self.store.deliveries(state, limit, session_id=session_id, before=before)

    async def retry_delivery(self, delivery_id: str) -> bool | None:
        """Put a failed delivery back in line, with every earlier failed one of its session, and
        wake the relay: ``True``; ``False`` when it is not failed; ``None`` when there is no such
        delivery."""
        retried = await self.store.retry_delivery(delivery_id, self.clock())
        if retried:
            self._wake_the_relay()
        return retried

    async def retry_failed(self, session_id: str | None = None) -> int:
        """Put every failed delivery (of ``session_id``, when given) back in line, and wake the
        relay if there was any; how many."""
        requeued = await self.store.retry_failed(self.clock(), session_id)
        if requeued:
            self._wake_the_relay()
        return requeued

    def _wake_the_relay(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def ping(self) -> None:
        """Raise unless the storage answers."""
        await self.store.ping()

    def exposition(self) -> bytes:
        """The metrics as Prometheus text: every worker's when there are several."""
        return self.metrics.exposition()

    async def sweep(self) -> int:
        """Record ``canceled`` / ``action_timeout`` for every window that has ended."""
        now = self.clock()
        due = await self.store.sessions_due(now)
        for session_id in due:
            changed = await self.store.update_session(
                session_id,
                lambda session: session and lifecycle.at(session, now),
                Event(session_id, now, "timeout", {}),
            )
            if changed.after is not None and changed.after.timed_out:
                log.info("session %s: the action window ended", session_id)
            self._count_transition(changed)
            await self.bank_outcomes.ended(changed)
        return len(due)

    def _count_transition(self, changed: Changed) -> None:
        before, after = changed.before, changed.after
        if after is not None and (before is None or before.status is not after.status):
            self.metrics.transition(after.status.value)
            log.info(
                "session %s: %s -> %s%s",
                after.id,
                before.status.value if before else "new",
                after.status.value,
                f" ({after.reason})" if after.reason else "",
            )

    async def forget_old(self) -> int:
        """Delete webhook bodies and finished sessions older than ``BRIDGE_RETENTION_DAYS``, a
        batch per transaction (the history stays); how many rows went."""
        before = self.clock() - self.settings.retention_days * DAY
        gone = 0
        while True:
            batch = await self.store.forget(before, FORGET_BATCH, self.clock())
            gone += batch
            if batch < FORGET_BATCH:
                return gone
            await asyncio.sleep(0)  # others' writes get their turn between batches

    async def page_shown(self, shown: Shown) -> None:
        """Note in the history that a customer page showed a step: once per step, status and
        bank action in this process (a page reloaded in a loop writes one row), before the page
        goes out, so the history a partner reads next already holds it."""
        if shown in self._pages_seen:
            return
        if len(self._pages_seen) >= PAGES_REMEMBERED:
            del self._pages_seen[next(iter(self._pages_seen))]
        self._pages_seen[shown] = None
        session_id, step = shown[:2]
        try:
            await self.store.add_event(Event(session_id, self.clock(), "page", {"step": step}))
        except StorageUnavailableError:  # the history misses a page view; the customer does not
            log.warning("session %s: a page view was not written to its history", session_id)
            del self._pages_seen[shown]

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                if expired := await self.sweep():
                    log.info("recorded %d action timeouts", expired)
                if forgotten := await self.forget_old():
                    log.info("retention: deleted %d old webhook bodies and sessions", forgotten)
            except Exception:  # the next round tries again; reads infer timeouts meanwhile
                log.exception("the sweep failed")


def webhook_write(
    body: bytes,
    webhook: Webhook,
    *,
    meaning: bytes,
    received_at: float,
    relay_signature: str | None,
    action_timeout: float,
) -> tuple[Delivery, Update]:
    """A verified webhook as the store records it: its delivery, and its session's update."""
    delivery = Delivery(
        digest=hashlib.sha256(body).digest(),
        body=body,
        session_id=webhook.session_id,
        type=webhook.type,
        received_at=received_at,
        provider_updated_at=webhook.updated_at,
        relay_signature=relay_signature,
        meaning=meaning,
    )

    def update(session: Session | None) -> Session | None:
        # Any signed webhook makes its session known, even one that moves nothing.
        return lifecycle.apply(
            session, webhook, received_at=received_at, action_timeout=action_timeout
        ) or lifecycle.new_session(webhook.session_id, received_at)

    return delivery, update


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
