"""CORS for routes any origin may read: the customer status API, whose token is the credential.

No cookies are involved, so the policy is the wildcard one and the same four headers on every
answer, errors included: made once, where quart-cors re-read and re-parsed its settings on
every answer for headers that never change (its cost: docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from quart import Blueprint, Response, request


def allow_any_origin(
    blueprint: Blueprint,
    *,
    methods: Iterable[str],
    headers: Iterable[str],
    expose: Iterable[str],
    max_age: int,
) -> Blueprint:
    """Every answer of ``blueprint`` may be read by any origin; preflights are answered."""
    always = always_headers(expose)
    preflight = {
        "Access-Control-Allow-Methods": ", ".join(methods),
        "Access-Control-Allow-Headers": ", ".join(headers),
        "Access-Control-Max-Age": str(max_age),
    }

    @blueprint.after_request
    async def _allow(response: Response) -> Response:
        response.headers.update(always)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response.headers.update(preflight)
        return response

    return blueprint


def always_headers(expose: Iterable[str]) -> dict[str, str]:
    """What every answer of such a route carries, preflight or not."""
    return {
        "Access-Control-Allow-Origin": "*",
        "Access-Control-Expose-Headers": ", ".join(expose),
    }
