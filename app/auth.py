"""Partner authentication: bearer keys from ``BRIDGE_API_KEYS``, and a wait for a guesser."""

from __future__ import annotations

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
    """Bearer keys from ``BRIDGE_API_KEYS`` (:meth:`app.bridge.Bridge.check_partner_key`)."""

    @wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        address = request.remote_addr or ""
        refuse(bridge().partner_key_wait(address))  # a guesser waits, whatever key comes next
        if not bridge().check_partner_key(request.headers.get("Authorization", ""), address):
            raise APIError(401, "unauthorized", "a valid partner API key is required")
        return await view(*args, **kwargs)

    return security_scheme([{"partnerKey": []}])(wrapper)  # type: ignore[return-value]
