"""One page at the bank at a time: which of a session's pages holds its bank step, and the
single-use links that move the step to another browser (``continue on your phone``).

The customer pages are kept and sent again to every request alike (:mod:`app.front`), and
link previews and prefetches fetch them: so no GET holds or moves anything. A page's own script
asks, with a random id it made for its tab, whether it may submit (``POST /pay/{token}/claim``);
the page a handoff link opens claims the link from its script, or with a button without one.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, abort, request
from quart_schema import hide

from . import rendering, routes
from .actions import qr_image
from .auth import customer_session
from .bodies import optional_body
from .current import bridge
from .errors import APIError, found
from .links import external, local, pay_path
from .origins import from_another_site
from .schemas import iso, json_answer

bp = Blueprint("holders", __name__)
_PAGE = "[A-Za-z0-9_-]{16,64}"  # what a page's script makes: 128 random bits, URL-safe
_SECRET = re.compile("[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)
_NO_PAGE = "without-script"  # the holder when the form came without script: no page's id


class ClaimRequest(BaseModel):
    """Which page asks, and whether it takes the step from whoever holds it (continue-here)."""

    model_config = ConfigDict(extra="forbid")

    page: str | None = Field(default=None, pattern=f"^{_PAGE}$")
    take: bool = False


@bp.post(routes.CLAIM.rule)
@hide
async def claim(token: str) -> Response:
    """``{"held": true}`` when the asking page holds the bank step now and may submit it."""
    session = await customer_session(token)
    wanted = await optional_body(ClaimRequest, '{"page": "<its id>", "take": false}')
    if wanted.page is None:
        raise APIError(422, "invalid_request", "the body names no page")
    held = await bridge().hold_step(token, session.id, wanted.page, take=wanted.take)
    return json_answer({"held": held})


@bp.post(routes.HANDOFF.rule)
@hide
async def hand_off(token: str) -> Response:
    """A single-use link that opens this session's bank step in another browser, with its QR
    code (drawn here, asked for only when the customer wants it)."""
    session = await customer_session(token)
    if session.status.is_outcome:  # the customer's part is over: nothing to move
        raise APIError(410, "gone", "the customer's part of this session is over")
    secret, expires_at = await bridge().hand_off(token, session.id)
    link = external(routes.HANDOFF_LINK.path(secret))
    answer = {"handoff_url": link, "expires_at": iso(expires_at), "qr": qr_image(link)}
    return json_answer(answer, 201)


@bp.get(routes.HANDOFF_LINK.rule)
@hide
async def handoff_page(token: str) -> Response:
    """What a handoff link opens: a page whose script claims the link (a preview that only
    fetches it claims nothing), or a 410 once it is used or expired."""
    open_now = found(await bridge().handoff_open(token) if _SECRET.fullmatch(token) else None)
    return await _handoff_page(token, usable=open_now)


@bp.post(routes.HANDOFF_LINK.rule)
@hide
async def take_handoff(token: str) -> Response:
    """Claim a handoff link: this browser now holds the session's bank step, with a token of
    its own; the page that sent the form names itself (a form sent without script, nobody)."""
    _only_from_its_own_pages()
    if not _SECRET.fullmatch(token):
        abort(404)
    form = await request.form
    page = form.get("page", "")
    own = await bridge().claim_handoff(token, page if re.fullmatch(_PAGE, page) else _NO_PAGE)
    if own is None:
        return await _handoff_page(token, usable=False)
    return Response(status=303, headers={"Location": local(pay_path(own))})


async def _handoff_page(secret: str, *, usable: bool) -> Response:
    page = await rendering.render(
        "pay/handoff.html",
        usable=usable,
        action=local(routes.HANDOFF_LINK.path(secret)),
        page={"handoff": True},
    )
    return Response(page, 200 if usable else 410, content_type="text/html; charset=utf-8")


def _only_from_its_own_pages() -> None:
    if from_another_site():
        abort(403)
