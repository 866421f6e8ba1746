"""``POST /pay/{token}/browser``: what the customer's browser reports of the bank step, from the
bridge's own pages (templates/pay/page.js), for the session's history and the per-bank metrics.

The token is the credential; another site's page is refused. The body names an event and a
mode, nothing of the customer's; a session's history keeps a few dozen of them at most.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from quart import Blueprint, Response
from quart_schema import hide

from . import routes
from .auth import customer_session
from .bodies import required_body
from .current import bridge
from .errors import refusal
from .refusals import TooManyRequestsError

bp = Blueprint("reports", __name__)
LARGEST = 1024  # bytes: a report is a few dozen


class BrowserReport(BaseModel):
    """``bank``: the form went to the bank, framed (``iframe``), in a ``popup`` or as the whole
    ``page``; ``fallback``: a framed step went to a window; ``handoff``: another browser took
    the step."""

    model_config = ConfigDict(extra="forbid")
    event: Literal["bank", "fallback", "handoff"]
    mode: Literal["iframe", "popup", "page"] | None = None


@bp.post(routes.BROWSER.rule)
@hide
async def report(token: str) -> Response:
    """``204`` once noted (or beyond the session's few dozen, not stored); ``403`` from another
    site's page; ``404`` a bad token; ``400``/``422`` a body that is not a report; ``429``
    beyond the token's rate. Every refusal in JSON."""
    session = await customer_session(token)
    try:
        bridge().count_browser_report(token)
    except TooManyRequestsError as error:
        refused = refusal(error)
        assert refused is not None
        raise refused from None
    shape = '{"event": "bank"|"fallback"|"handoff", "mode": "iframe"|"popup"|"page"|null}'
    told = await required_body(BrowserReport, shape, most=LARGEST)
    await bridge().browser_report(session, told.event, told.mode)
    return Response(status=204)
