"""Ids that are unique beyond one database: a relay delivery's, which a partner keeps to know
what it handled already, whichever bridge, database, restored backup or fresh install sent it.

A ULID after ``msg_`` (as Standard Webhooks' examples spell message ids): 48 bits of
milliseconds, then 80 random bits, in Crockford's base32, so ids sort by time and two made in
the same millisecond anywhere collide with odds of one in 2**80.
"""

from __future__ import annotations

import secrets

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def message_id(now: float) -> str:
    """A new message id, made at ``now`` (Unix seconds)."""
    value = (int(now * 1000) & (2**48 - 1)) << 80 | secrets.randbits(80)
    return "msg_" + "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
