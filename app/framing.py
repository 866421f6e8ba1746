"""Whether a bank's pages may be framed, from what the bridge can know before a customer is
sent: a bank origin's answer headers, and what earlier customers of that bank showed. Pure.

A parent page cannot see that a frame was refused (Chromium fires ``load`` all the same, and
the refused frame shows nothing the parent may read), so only this prior knowledge, or a
customer who waited in vain, can move a bank step out of a frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# Framed steps taken to a window after the wait, with windowed ones coming back, before the
# bridge believes a bank refuses frames from its customers alone: one may be an impatient
# customer, two of them with no framed return at all are the bank.
STALLS_TO_LEARN = 2
# Source expressions of frame-ancestors that let any page of that scheme frame the bank.
_ANY_ANCESTOR = frozenset({"*", "https:", "http:"})


class Frames(StrEnum):
    """What the bridge knows of a bank origin's frames, as the embedding script is told."""

    REFUSED = "refused"
    ALLOWED = "allowed"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class BankRecord:
    """What is known of one bank origin, kept for every instance."""

    origin: str
    looked_at: float | None = None  # when a look at its headers was last begun
    headers: Frames | None = None  # what the last look's answer said, if it said anything
    stalled: int = 0  # framed steps a customer took to a window after the wait
    framed_returns: int = 0  # customers back from the bank inside a frame
    windowed_returns: int = 0  # customers back from the bank in a window of their own


@dataclass(frozen=True, slots=True)
class BankSteps:
    """What one customer's step adds to a bank origin's record."""

    stalled: int = 0
    framed_returns: int = 0
    windowed_returns: int = 0


def refused_by(headers: Iterable[tuple[str, str]]) -> bool:
    """Whether answer headers forbid a page of another origin to frame the answer, as Chromium
    reads them: ``Content-Security-Policy`` ``frame-ancestors`` when present (it overrides
    ``X-Frame-Options``), else ``X-Frame-Options`` ``DENY`` or ``SAMEORIGIN`` (the bridge and
    the shop are never the bank's origin; ``ALLOW-FROM`` is ignored by browsers)."""
    policies: list[str] = []
    options: list[str] = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-security-policy":
            policies.extend(value.split(","))
        elif lowered == "x-frame-options":
            options.extend(part.strip().lower() for part in value.split(","))
    ancestors = [sources for policy in policies if (sources := _frame_ancestors(policy))]
    if ancestors:
        return any(not _ANY_ANCESTOR.intersection(sources) for sources in ancestors)
    return any(option in ("deny", "sameorigin") for option in options)


def _frame_ancestors(policy: str) -> list[str] | None:
    for directive in policy.split(";"):
        words = directive.split()
        if words and words[0].lower() == "frame-ancestors":
            return [source.lower() for source in words[1:]] or ["'none'"]
    return None


def verdict(record: BankRecord | None) -> Frames:
    """What the embedding script is told of a bank origin. A customer back inside a frame
    proves frames work there; customers who waited in vain while others came back through a
    window prove they do not; the headers the bridge saw come next."""
    if record is None:
        return Frames.UNKNOWN
    if record.framed_returns:
        return Frames.ALLOWED
    if record.stalled >= STALLS_TO_LEARN and record.windowed_returns:
        return Frames.REFUSED
    return record.headers or Frames.UNKNOWN
