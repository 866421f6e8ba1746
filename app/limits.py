"""Rate limits (429 with ``Retry-After``): the status API per token, minting per partner key.

The limits live in each process (quart-rate-limiter's memory store): with ``--workers N`` a
client may get up to N times the limit, which still stops a runaway client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

from quart import Quart, request
from quart_rate_limiter import RateLimit, RateLimiter

from .config import Settings

MINUTE = timedelta(minutes=1)


def init_app(app: Quart, settings: Settings) -> None:
    limits = []
    if settings.status_rate_limit:
        limits.append(
            RateLimit(
                settings.status_rate_limit,
                MINUTE,
                key_function=_token,
                skip_function=_unless("status.status", "status.events"),
            )
        )
    if settings.token_rate_limit:
        limits.append(
            RateLimit(
                settings.token_rate_limit,
                MINUTE,
                key_function=_partner,
                skip_function=_unless("api.create_token"),
            )
        )
    RateLimiter(app, default_limits=limits)


def _unless(*endpoints: str) -> Callable[[], Awaitable[bool]]:
    async def skip() -> bool:
        return request.endpoint not in endpoints

    return skip


async def _token() -> str:
    return "token:" + (request.view_args or {}).get("token", "")


async def _partner() -> str:
    # A digest, so the key itself is not kept in memory as a dictionary key.
    credential = request.headers.get("Authorization", "").encode()
    return "partner:" + hashlib.sha256(credential).hexdigest()
