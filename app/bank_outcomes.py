"""What came of each bank step, per bank, for ``/metrics``: which banks refuse frames or lose
customers.

A bank step begins when the customer's page reports the form went (a ``browser`` ``bank``
event) and is counted, by the bank's origin, as ``returned`` when the customer comes back,
``fallback`` when its framed step went to a window, and ``abandoned`` when its session ends
(the customer gave up, the window passed) with no return after the form went. The origin comes
only from the signed webhook's interaction (:mod:`app.actions`), never from the browser; the
facts come from the session's history, so that every instance counts alike. A return after the
provider's final word (which drops the interaction) is named by the origin this process saw when
the form went, if it did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .actions import BankStep, RefusedActionError, customer_action
from .lifecycle import Session
from .metrics import Metrics
from .store import Changed, Event, StorageUnavailableError, Store

log = logging.getLogger(__name__)
REMEMBERED = 10_000  # sessions whose bank origin this process keeps for their return


@dataclass
class BankOutcomes:
    store: Store
    metrics: Metrics
    allow_http: bool
    _origins: dict[str, str] = field(default_factory=dict)  # session id -> bank origin

    def reported(self, session: Session, event: str) -> None:
        """The customer's page reported ``event`` of the session's bank step (stored)."""
        origin = self._origin(session)
        if origin is None:
            return
        if event == "bank":
            self.metrics.bank_seen(origin)
        elif event == "fallback":
            self.metrics.bank_step(origin, "fallback")

    async def returned(self, before: Session | None, now: float) -> None:
        """The customer came back at ``now`` to the session that stood as ``before``."""
        if before is None or (origin := self._origin(before)) is None:
            return
        left = await self._form_left(before)
        self.metrics.bank_step(origin, "returned", None if left is None else now - left.at)
        self._origins.pop(before.id, None)

    async def ended(self, changed: Changed) -> None:
        """A session the bridge itself ended (the customer gave up, or the window passed)."""
        before, after = changed.before, changed.after
        if before is None or after is None or after == before or not after.canceled_here:
            return
        if before.customer_returned or (origin := self._origin(before)) is None:
            return
        if await self._form_left(before) is not None:
            self.metrics.bank_step(origin, "abandoned")
        self._origins.pop(before.id, None)

    def _origin(self, session: Session) -> str | None:
        """The bank's origin of the session's current step; remembered for its return."""
        origin = self._origins.get(session.id)
        if session.interaction is not None:
            try:
                action = customer_action(session.interaction, allow_http=self.allow_http)
            except RefusedActionError:
                return origin
            if isinstance(action, BankStep):
                origin = action.origin
                self._remember(session.id, origin)
        return origin

    def _remember(self, session_id: str, origin: str) -> None:
        self._origins.pop(session_id, None)  # re-inserted last: the oldest go first
        self._origins[session_id] = origin
        if len(self._origins) > REMEMBERED:
            del self._origins[next(iter(self._origins))]

    async def _form_left(self, session: Session) -> Event | None:
        """The latest report that the current step's form went, if any."""
        since = session.action_received_at
        if since is None:
            return None
        try:
            history = await self.store.events(session.id)
        except StorageUnavailableError:  # the metrics miss it; the customer does not
            log.warning("session %s: its bank step was not counted", session.id)
            return None
        left = [
            event
            for event in history
            if event.kind == "browser" and event.detail.get("event") == "bank" and event.at >= since
        ]
        return left[-1] if left else None
