"""The session state machine. Pure: no I/O, no clock; time is always passed in.

Statuses move forward only::

    pending -> action_required -> in_progress -> succeeded | failed | canceled | error
                                                  succeeded -> refunded

Three exceptions keep every delivery order converging on the provider's truth:
- ``canceled`` with reason ``action_timeout`` is the bridge's own inference when the action window
  passes; any final webhook from the provider replaces it.
- ``error`` is the provider's non-final error state: a later ``succeeded``, ``failed`` or
  ``canceled`` replaces it.
- ``refunded`` proves the payment succeeded, so it is taken from any status but ``failed`` and a
  provider's ``canceled``, even when the refund overtakes ``payment_finished``; a chargeback
  marks a refunded session whichever refund came first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from .provider import Webhook


class Status(StrEnum):
    PENDING = "pending"
    ACTION_REQUIRED = "action_required"
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ERROR = "error"
    REFUNDED = "refunded"

    @property
    def is_final(self) -> bool:
        return _RANK[self] >= _RANK[Status.SUCCEEDED]


ACTION_TIMEOUT = "action_timeout"
CHARGEBACK = "chargeback"

_RANK = {
    Status.PENDING: 0,
    Status.ACTION_REQUIRED: 1,
    Status.IN_PROGRESS: 2,
    Status.SUCCEEDED: 3,
    Status.FAILED: 3,
    Status.CANCELED: 3,
    Status.ERROR: 3,
    Status.REFUNDED: 4,
}


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


def new_session(session_id: str, now: float) -> Session:
    """A session nobody has heard of yet: a token was minted, or its first webhook is here."""
    return Session(id=session_id, status=Status.PENDING, created_at=now, updated_at=now)


def target_of(webhook: Webhook) -> Target | None:
    """The bridge status a webhook asks for, or ``None`` when it asks for none."""
    kind = webhook.type
    if kind == "action_required":
        return Target(Status.ACTION_REQUIRED) if webhook.interaction is not None else None
    if kind in ("ready_to_confirm", "ready_to_capture"):
        return Target(Status.IN_PROGRESS)
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
        return replace(
            session,
            status=Status.CANCELED,
            reason=ACTION_TIMEOUT,
            interaction=None,
            updated_at=expires,
        )
    return session


def may_move(current: Session, target: Target) -> bool:
    """Whether ``current`` (already seen at the webhook's time) may take ``target``."""
    status = target.status
    if current.timed_out:
        return status.is_final
    if status is current.status:
        # A new action replaces the old one; a chargeback is news about a refund.
        chargeback = target.reason == CHARGEBACK != current.reason
        return status is Status.ACTION_REQUIRED or (status is Status.REFUNDED and chargeback)
    if status is Status.REFUNDED:
        return current.status not in (Status.FAILED, Status.CANCELED)
    if current.status is Status.ERROR:
        return status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELED)
    return _RANK[status] > _RANK[current.status]


def apply(
    session: Session | None, webhook: Webhook, *, received_at: float, action_timeout: float
) -> Session | None:
    """The session after ``webhook``; ``session`` itself when the webhook changes nothing."""
    target = target_of(webhook)
    if target is None:
        return session
    current = at(session or new_session(webhook.session_id, received_at), received_at)
    if not may_move(current, target):
        return session
    payments = tuple(payment.summary() for payment in webhook.payments) or current.payments
    if target.status is Status.ACTION_REQUIRED:
        if current.status is Status.ACTION_REQUIRED and current.interaction == webhook.interaction:
            return session
        return replace(
            current,
            status=Status.ACTION_REQUIRED,
            reason=None,
            interaction=webhook.interaction,
            action_received_at=received_at,
            action_expires_at=received_at + action_timeout,
            updated_at=received_at,
            payments=payments,
        )
    return replace(
        current,
        status=target.status,
        reason=target.reason,
        interaction=None,
        action_expires_at=None,
        updated_at=received_at,
        payments=payments,
    )


def expires_at(session: Session) -> float | None:
    """When the current action window ends, or ``None`` when no action is pending."""
    return session.action_expires_at if session.status is Status.ACTION_REQUIRED else None
