"""Customer tokens: an itsdangerous-signed session id with a purpose and an expiry.

The token is the customer's only credential: it opens ``/pay/{token}`` and
``/api/v1/status/{token}`` for one session and nothing else. A token signs the session id
alone, the shape every token has had, or ``[session id, return URL]`` when the partner gave
it a ``return_url`` of its own; a signed value of any other shape opens nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import (
    BadData,
    TimestampSigner,
    URLSafeTimedSerializer,
    base64_decode,
    base64_encode,
)

_PURPOSE = "redirect-bridge/customer-token/v1"
# Tokens whose signature has been checked, remembered so that a page polling its status does
# not pay for the HMAC and base64 each time. Keyed by the whole token, signature included, so
# only a token that verified can ever be found; expiry is still checked on every read. Oldest
# out first.
KNOWN_TOKENS = 16_384
# What the serializer makes: payload (a leading "." when compressed), timestamp and a SHA-1
# signature, URL-safe base64 each. Only that shape is read: itsdangerous's base64 would read
# past trailing junk, so one token could be sent (and remembered) in endless copies.
_SHAPE = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{27}")
# The longest token: a 256-character session id JSON-escaped (up to 12 characters each, as
# surrogate pairs) beside a 2048-character return URL (ASCII once escaped), uncompressed (zlib
# is used only when it shortens), base64 (4/3), with the timestamp, the signature and the dots:
# 6,873 characters. The bound is a little above it; minting checks it.
_LONGEST = 7168


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token proves: this session, since this time; and where its customer goes
    once the outcome is known, when the partner said so while minting it."""

    session_id: str
    issued_at: float
    return_url: str | None = None


class Tokens:
    """Mints and reads tokens. With several secrets the last one signs and every one verifies."""

    def __init__(self, secret_keys: Sequence[str], ttl: int, clock: Callable[[], float]) -> None:
        # The signer reads the bridge's clock, so expiry follows the same time as everything else.
        signer = type("_Signer", (TimestampSigner,), {"get_timestamp": lambda _: int(clock())})
        self._serializer = URLSafeTimedSerializer(list(secret_keys), salt=_PURPOSE, signer=signer)
        self._clock = clock
        self.ttl = ttl
        # token -> (session id, issued at, return URL)
        self._known: dict[str, tuple[str, int, str | None]] = {}

    def mint(self, session_id: str, return_url: str | None = None) -> Minted:
        """A token for ``session_id``; with ``return_url`` (already checked, at most
        ``returns.RETURN_URL_LONGEST`` characters) its customer goes there."""
        stamped = int(self._clock())  # itsdangerous stamps whole seconds; valid while age <= ttl
        payload: str | list[str] = session_id if return_url is None else [session_id, return_url]
        token = self._serializer.dumps(payload)
        if len(token) > _LONGEST:  # it would never read back
            raise ValueError(f"a token of {len(token)} characters is over {_LONGEST}")
        return Minted(token=token, expires_at=float(stamped + self.ttl))

    def read(self, token: str) -> Grant | None:
        """What a token grants, or ``None`` for a bad, tampered, foreign or expired one."""
        known = self._known.get(token)
        if known is None:
            if len(token) > _LONGEST or not _SHAPE.fullmatch(token) or not _canonical(token):
                return None
            known = self._verify(token)
        if known is None:
            return None
        session_id, issued, return_url = known
        age = int(self._clock()) - issued  # as itsdangerous counts it: whole seconds
        return Grant(session_id, float(issued), return_url) if 0 <= age <= self.ttl else None

    def _verify(self, token: str) -> tuple[str, int, str | None] | None:
        try:
            value, issued = self._serializer.loads(token, return_timestamp=True)
        except BadData:
            return None
        granted = _granted(value)
        if granted is None:
            return None
        if len(self._known) >= KNOWN_TOKENS:
            del self._known[next(iter(self._known))]  # the oldest
        self._known[token] = known = (granted[0], int(issued.timestamp()), granted[1])
        return known


def _granted(value: Any) -> tuple[str, str | None] | None:
    """(session id, return URL) from a signed payload of either shape; ``None`` for any other
    value (signed with the secret, but not as a token)."""
    if isinstance(value, str):
        return value, None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    return None


def _canonical(token: str) -> bool:
    """Whether every part is spelled as the serializer spells it: base64 leaves spare bits in
    the last character of a part, so the same bytes have up to four spellings."""
    try:
        return all(
            base64_encode(base64_decode(part)).decode() == part
            for part in token.removeprefix(".").split(".")
        )
    except BadData:
        return False
