"""Customer tokens: an itsdangerous-signed session id with a purpose and an expiry.

The token is the customer's only credential: it opens ``/pay/{token}`` and
``/api/v1/status/{token}`` for one session and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer

_PURPOSE = "redirect-bridge/customer-token/v1"


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid token proves: this session, since this time."""

    session_id: str
    issued_at: float


class Tokens:
    """Mints and reads tokens. With several secrets the last one signs and every one verifies."""

    def __init__(self, secret_keys: Sequence[str], ttl: int, clock: Callable[[], float]) -> None:
        # The signer reads the bridge's clock, so expiry follows the same time as everything else.
        signer = type("_Signer", (TimestampSigner,), {"get_timestamp": lambda _: int(clock())})
        self._serializer = URLSafeTimedSerializer(list(secret_keys), salt=_PURPOSE, signer=signer)
        self._clock = clock
        self.ttl = ttl

    def mint(self, session_id: str) -> Minted:
        stamped = int(self._clock())  # itsdangerous stamps whole seconds; valid while age <= ttl
        token = self._serializer.dumps(session_id)
        return Minted(token=token, expires_at=float(stamped + self.ttl))

    def read(self, token: str) -> Grant | None:
        """What a token grants, or ``None`` for a bad, tampered, foreign or expired one."""
        try:
            value, issued = self._serializer.loads(token, max_age=self.ttl, return_timestamp=True)
        except BadData:
            return None
        return Grant(value, issued.timestamp()) if isinstance(value, str) else None
