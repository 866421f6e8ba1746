"""Who may ask: a partner by its bearer key from ``BRIDGE_API_KEYS`` (a guesser waits), and the
bridge's own pages by their customer token, on the JSON endpoints they post to."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar

from quart import request
from quart_schema import security_scheme

from .current import bridge
from .errors import APIError
from .lifecycle import Session
from .limits import refuse
from .origins import from_another_site

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


async def customer_session(token: str) -> Session:
    """The session a customer token opens, for the JSON endpoints the bridge's own pages post to
    (reports, the step's claim, a handoff): a 403 from another site's page, a 404 for a bad
    token, in JSON as every refusal there."""
    if from_another_site():
        raise APIError(403, "forbidden", "only the bridge's own pages may ask this")
    session = await bridge().customer_session(token)
    if session is None:
        raise APIError(404, "not_found", "the token is unknown or has expired")
    return session
