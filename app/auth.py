"""Partner authentication: bearer keys from ``BRIDGE_API_KEYS``, and a wait for a guesser."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from quart import request
from quart_schema import security_scheme

from .current import bridge
from .errors import APIError
from .limits import refuse

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def partner_only(view: F) -> F:
    """Bearer keys from ``BRIDGE_API_KEYS``, compared in constant time."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        guesses, address = bridge().key_guesses, request.remote_addr or ""
        refuse(guesses.waiting(address))  # a guesser waits, whatever key comes next
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        matched = False
        for candidate in bridge().settings.api_keys:  # no early exit: every key is compared
            matched |= hmac.compare_digest(candidate.encode(), key.strip().encode())
        if scheme.lower() != "bearer" or not matched:
            guesses.over(address)
            raise APIError(401, "unauthorized", "a valid partner API key is required")
        return await view(*args, **kwargs)

    return security_scheme([{"partnerKey": []}])(wrapper)  # type: ignore[return-value]
