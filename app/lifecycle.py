"""The session state machine. Pure: no I/O, no clock; time is always passed in.

Smart Glocal's webhooks come in several documented orders (``ready_to_confirm`` before or after
``action_required``, ``ready_to_capture`` before the final ``payment_finished``), and any of them
may be retried and arrive late. So, before a final status, the newest provider event wins:
webhooks are ordered by the provider's clock (``session.updated_at``), and by the order they were
received when those times are equal or missing. A webhook older than the one the current status
came from changes nothing.

A final status is never undone by a non-final webhook, whatever its time. Among final statuses:
- ``canceled`` with reason ``action_timeout`` is the bridge's own inference when the action window
  passes, and ``canceled`` with reason ``customer`` the customer's giving up on a bridge page
  (:func:`cancel`); any final webhook from the provider replaces either.
- ``error`` is the provider's non-final error state: a later ``succeeded``, ``failed`` or
  ``canceled`` replaces it.
- ``refunded`` proves the payment succeeded, so it is taken from any status but ``failed`` and a
  provider's ``canceled``, even when the refund overtakes ``payment_finished``; a chargeback
  marks a refunded session whichever refund came first.
These hold whatever the times, so every delivery order of a history ends in the same status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .provider import NextAction, Webhook


class Status(StrEnum):
    PENDING = "pending"
    ACTION_REQUIRED = "action_required"
    IN_PROGRESS = "in_progress"
    AUTHORIZED = "authorized"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ERROR = "error"
    REFUNDED = "refunded"

    @property
    def is_final(self) -> bool:
        return self in _FINAL

    @property
    def is_outcome(self) -> bool:
        """The customer's part is over: pages show the outcome and go on to the partner, the
        status answer says ``done``, the embedding script completes. ``authorized`` (the money
        is held until the partner captures) is one, though the session still moves on."""
        return self is Status.AUTHORIZED or self in _FINAL


ACTION_TIMEOUT = "action_timeout"
CUSTOMER = "customer"  # the customer gave up on a bridge page
_BRIDGES_OWN = frozenset({ACTION_TIMEOUT, CUSTOMER})  # reasons the provider's final word replaces
CHARGEBACK = "chargeback"

_FINAL = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.ERROR, Status.REFUNDED}
)


@dataclass(frozen=True, slots=True)
class Target:
    """The status a webhook asks for."""

    status: Status
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Session:
    """A payment session as the bridge knows it. Times are Unix seconds of the bridge's clock."""

    id: str
    status: Status
    created_at: float
    updated_at: float
    reason: str | None = None
    interaction: Mapping[str, Any] | None = None
    action_received_at: float | None = None
    action_expires_at: float | None = None
    returned_at: float | None = None
    payments: tuple[Mapping[str, Any], ...] = ()
    # The provider's clock (``session.updated_at``) of the webhook the status came from.
    provider_updated_at: float | None = None
    # What the provider waits for from the partner (``confirm``, ``capture``) by that webhook.
    next_action: NextAction | None = None

    @property
    def customer_returned(self) -> bool:
        """The customer came back from the bank after the current action was sent."""
        return (
            self.returned_at is not None
            and self.action_received_at is not None
            and self.returned_at >= self.action_received_at
        )

    @property
    def timed_out(self) -> bool:
        return self.status is Status.CANCELED and self.reason == ACTION_TIMEOUT

    @property
    def canceled_here(self) -> bool:
        """``canceled`` by the bridge itself (the window passed, or the customer gave up), not
        by the provider: its final word still replaces this."""
        return self.status is Status.CANCELED and self.reason in _BRIDGES_OWN


def new_session(session_id: str, now: float) -> Session:
    """A session nobody has heard of yet: a token was minted, or its first webhook is here."""
    return Session(id=session_id, status=Status.PENDING, created_at=now, updated_at=now)


def target_of(webhook: Webhook) -> Target | None:
    """The bridge status a webhook asks for, or ``None`` when it asks for none."""
    kind = webhook.type
    if kind == "action_required":
        return Target(Status.ACTION_REQUIRED) if webhook.interaction is not None else None
    if kind == "ready_to_confirm":
        return Target(Status.IN_PROGRESS)
    if kind == "ready_to_capture":
        return Target(Status.AUTHORIZED)
    if kind == "payment_refunded":
        chargeback = any(payment.chargeback for payment in webhook.payments)
        return Target(Status.REFUNDED, CHARGEBACK if chargeback else None)
    if kind == "payment_finished":
        return _finished(webhook)
    return None


def _finished(webhook: Webhook) -> Target | None:
    payment = webhook.payments[-1] if webhook.payments else None
    payment_status = payment.status if payment else None
    error_code = payment.error_code if payment else None
    session_status = webhook.session_status
    if session_status in ("cancelled", "canceled"):
        return Target(Status.CANCELED)
    if session_status == "error":
        return Target(Status.ERROR, error_code)
    if session_status == "accepted" or payment_status == "succeeded":
        return Target(Status.SUCCEEDED)
    if payment_status == "failed":
        return Target(Status.FAILED, error_code)
    return None


def at(session: Session, now: float) -> Session:
    """The session as seen at ``now``: an action whose window has passed is ``canceled``."""
    expires = session.action_expires_at
    if session.status is Status.ACTION_REQUIRED and expires is not None and now >= expires:
        return _canceled(session, ACTION_TIMEOUT, expires)
    return session


def cancel(session: Session, now: float) -> Session:
    """The session once its customer gives up on a bridge page at ``now``: ``canceled`` with
    reason ``customer`` while the customer's part is not over (``pending``, ``in_progress``, or
    ``action_required`` within its window); ``session`` itself once it is (an outcome, or a
    window that has passed: the customer is shown that instead)."""
    if at(session, now).status.is_outcome:
        return session
    return _canceled(session, CUSTOMER, now)


def _canceled(session: Session, reason: str, at: float) -> Session:
    """Canceled by the bridge itself: no bank step to show, nothing for the provider to wait for."""
    return replace(
        session,
        status=Status.CANCELED,
        reason=reason,
        interaction=None,
        next_action=None,
        updated_at=at,
    )


def may_move(current: Session, target: Target, provider_updated_at: float | None) -> bool:
    """Whether ``current`` (already seen at the webhook's time) may take ``target``, asked for
    by a webhook of the provider's time ``provider_updated_at``."""
    if not current.status.is_final:
        return target.status.is_final or not _older(
            provider_updated_at, current.provider_updated_at
        )
    status = target.status
    if not status.is_final:
        return False
    if current.canceled_here:
        return True
    if status is current.status:  # a chargeback is news about a refund
        return status is Status.REFUNDED and target.reason == CHARGEBACK != current.reason
    if status is Status.REFUNDED:
        return current.status not in (Status.FAILED, Status.CANCELED)
    if current.status is Status.ERROR:
        return status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)
    return False


def _older(time: float | None, than: float | None) -> bool:
    """Older by the provider's clock; equal or missing times leave the order of receipt."""
    return time is not None and than is not None and time < than


def apply(
    session: Session | None, webhook: Webhook, *, received_at: float, action_timeout: float
) -> Session | None:
    """The session after ``webhook``; ``session`` itself when the webhook changes nothing."""
    target = target_of(webhook)
    if target is None:
        return session
    current = at(session or new_session(webhook.session_id, received_at), received_at)
    if not may_move(current, target, webhook.updated_at):
        return session
    news = replace(
        current,
        status=target.status,
        reason=target.reason,
        payments=tuple(payment.summary() for payment in webhook.payments) or current.payments,
        provider_updated_at=_newest(webhook.updated_at, current.provider_updated_at),
        next_action=None if target.status.is_final else webhook.next_action,
    )
    if target.status is not Status.ACTION_REQUIRED:
        news = replace(news, interaction=None, action_expires_at=None)
    elif current.status is not Status.ACTION_REQUIRED or current.interaction != webhook.interaction:
        news = replace(
            news,
            interaction=webhook.interaction,
            action_received_at=received_at,
            action_expires_at=received_at + action_timeout,
        )
    if news == current:  # the same instruction again keeps its window: not a new bank step
        return session
    if replace(news, provider_updated_at=current.provider_updated_at) == current:
        return news  # only the provider's clock moved on: nothing new to show
    return replace(news, updated_at=received_at)


def _newest(time: float | None, than: float | None) -> float | None:
    return than if time is None else time if than is None else max(time, than)


def expires_at(session: Session) -> float | None:
    """When the current action window ends, or ``None`` when no action is pending."""
    return session.action_expires_at if session.status is Status.ACTION_REQUIRED else None
