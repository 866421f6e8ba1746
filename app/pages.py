"""The customer's pages: ``/pay/{token}`` and the return from the bank."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlencode

from quart import Blueprint, Response, abort, request
from quart_schema import hide

from . import lifecycle, rendering, routes
from .actions import BankStep, Elsewhere, QRCode, RefusedActionError, customer_action
from .answers import Shown
from .current import bridge, mark
from .errors import found
from .framing import BankSteps
from .i18n import language
from .inapp import script_table
from .keeping import KeptPage, PageNote, VariesBy
from .lifecycle import Session, Status
from .links import browser_path, cancel_path, external, local, pay_path, status_path
from .origins import from_another_site
from .returns import ReturnURLRefusedError, allowed_return_url, onward_url
from .schemas import etag_of, status_body
from .scope import PAGE
from .security import Page, origin_matches

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__)
# The windows the embedding script opens for a framed bank step (?window=).
WINDOWS = ("popup", "page")
# Every request input a customer page reads, besides its path: app.front sends a kept page
# again only to requests alike in all of them. Reading another one means declaring it here.
VARIES_BY = VariesBy(
    query=True,  # ?lang=, ?embedder=, ?returned=
    host=True,  # links made for the request's host when BRIDGE_PUBLIC_URL is not set
    headers=("accept-language", "sec-fetch-dest"),  # the language; whether it is framed
)


@bp.get(routes.PAY.rule)
@hide
async def pay(token: str) -> Response:
    """``?returned=1``: the return page moving on by itself; shown as a return, not recorded
    (a newer bank step must still reach the customer)."""
    since = bridge().answer_ticket()  # before the read: a change after it is not kept
    session = found(await bridge().customer_session(token))
    response = await _page(token, session, returned=_arg("returned") == "1")
    if isinstance(response, Page) and response.note.keep and request.method == "GET":
        # app.front keeps the page as it goes out, to send again until the session changes.
        mark(PAGE, KeptPage(response.note, since))
    return response


@bp.route(routes.RETURN.rule, methods=["GET", "POST"])
@hide
async def came_back(token: str) -> Response:
    """The customer is back from the bank (whatever the bank posted is not read).

    This page never redirects: it shows the outcome once known and tells the embedding page.
    """
    session = found(await bridge().customer_session(token))
    # Once per bank step, and never for a HEAD (a link preview, a proxy's check): a return
    # recorded takes the bank form away.
    pending = session.action_received_at is not None and not session.customer_returned
    if pending and request.method != "HEAD":
        session = await bridge().record_return(session.id)
        # Back inside a frame: this bank's pages can be framed; in a window: it works there.
        framed = request.headers.get("Sec-Fetch-Dest") == "iframe"
        steps = BankSteps(framed_returns=1) if framed else BankSteps(windowed_returns=1)
        await bridge().count_bank_step(session, steps)
    return await _page(token, session, returned=True)


@bp.post(routes.CANCEL.rule)
@hide
async def cancel(token: str) -> Response:
    """The customer gives up (the cancel form of the waiting, bank, QR, "open elsewhere" and
    refused pages): ``canceled`` with reason ``customer`` unless their part is over already,
    then the outcome. Answered with the outcome page rather than a redirect, whose script takes
    the customer on to the return URL (outside a partner's frame or popup): Chromium holds the
    redirect after a form post to the page's ``form-action``, which names no partner."""
    if from_another_site():
        abort(403)
    session = found(await bridge().customer_session(token))
    return await _page(token, await bridge().cancel(session.id), returned=True)


async def _page(token: str, session: Session, *, returned: bool) -> Response:
    done = session.status.is_outcome and not session.timed_out
    onward = _onward(token, session) if done else None
    context: dict[str, Any] = {
        "session": session,
        "page": _script_settings(token, session, returned, onward),
    }
    if session.timed_out:  # final too: the way back to the shop is offered, not taken
        return await _html("pay/expired.html", 410, onward=_onward(token, session), **context)
    if done:
        # In a partner's iframe the outcome is shown (and told to the embedder), not the shop.
        framed = request.headers.get("Sec-Fetch-Dest") == "iframe"
        if onward is not None and not returned and not framed:
            await _shown(_view(session, "onward"))  # sent on to the partner's return URL
            return Response(status=303, headers={"Location": onward})
        # A link to the shop carries the time it was made: that page is made every time.
        return await _html("pay/outcome.html", keep=onward is None, onward=onward, **context)
    if session.status is Status.ACTION_REQUIRED and not session.customer_returned:
        return await _action_page(token, session, context)
    return await _html("pay/waiting.html", keep=True, **context)


async def _action_page(token: str, session: Session, context: dict[str, Any]) -> Response:
    assert session.interaction is not None
    try:
        action = customer_action(
            session.interaction, allow_http=bridge().settings.allow_insecure_acs
        )
    except RefusedActionError as error:
        log.warning("refused the bank instruction for session %s: %s", session.id, error)
        return await _html("pay/refused.html", 502, **context)
    if isinstance(action, QRCode):
        return await _html("pay/qr.html", keep=True, qr=action, **context)
    if isinstance(action, Elsewhere):
        return await _html("pay/elsewhere.html", keep=True, **context)
    assert isinstance(action, BankStep)
    context["page"].update(await _bank_window(token, session, action))
    return await _html(
        "pay/bank.html", keep=True, bank_origin=action.origin, step=action, **context
    )


async def _html(
    template: str,
    status: int = 200,
    *,
    keep: bool = False,
    bank_origin: str | None = None,
    **context: Any,
) -> Page:
    """A page, with its note (:class:`app.keeping.PageNote`): ``keep`` when app.front may send
    it again while its session stands still (a 200 only), ``bank_origin`` where its form may
    post. The session's history notes the step it shows, named after its template: bank,
    waiting, qr, elsewhere, outcome, expired, refused."""
    session: Session = context["session"]
    shown = _view(session, PurePosixPath(template).stem)
    await _shown(shown)
    note = PageNote(
        VARIES_BY,
        shown,
        keep=keep and status == 200,
        until=lifecycle.expires_at(session),
        bank_origin=bank_origin,
    )
    return Page(await rendering.render(template, **context), status, note=note)


async def _bank_window(token: str, session: Session, action: BankStep) -> dict[str, Any]:
    """What the bank page's script needs to take a framed step to a window: what the bridge
    knows of the bank's frames (a step it knows will be refused is not submitted in a frame),
    and, on a page opened as that window (``?window=popup|page``, made by the embedding script;
    ``after=stall`` when its frame never came back), which one it is. What is known of the
    bank goes out with the page, kept until its session changes: a verdict learned meanwhile
    reaches the next step's page, and this one still offers the window after the wait."""
    window = _arg("window")
    if window not in WINDOWS:
        window = None
    elif _arg("after") == "stall" and request.method == "GET":
        await bridge().count_bank_step(session, BankSteps(stalled=1))
    path = local(pay_path(token))
    return {
        "bank_frames": (await bridge().bank_frames(action.origin)).value,
        "lang": language(),
        "window": window,
        "window_url": path + _query(window="page", after="known", take=True, lang=_arg("lang")),
        "report_url": path + "/browser",  # where the page tells how the step went
    }


def _view(session: Session, step: str) -> Shown:
    return (session.id, step, session.status.value, session.action_received_at)


async def _shown(shown: Shown) -> None:
    if request.method != "HEAD":
        await bridge().page_shown(shown)


def _script_settings(
    token: str, session: Session, returned: bool, onward: str | None
) -> dict[str, Any]:
    """What the page's one script needs; never the bank's URL or fields."""
    # Same-origin paths (under BRIDGE_PUBLIC_URL's path, if any): the CSP allows 'self'.
    lang = _arg("lang")
    configured = bridge().settings.frame_ancestors
    embedder = _arg("embedder")
    origins = list(configured)
    if embedder and any(origin_matches(pattern, embedder) for pattern in configured):
        origins.append(embedder)  # a pattern's real origin, as the embedding script says it
    else:
        embedder = None
    return {
        "status": session.status.value,
        "done": session.status.is_outcome,
        "etag": etag_of(status_body(session, external(pay_path(token)))),
        "status_url": local(status_path(token)),
        "next_url": local(pay_path(token))
        + _query(lang=lang, embedder=embedder, returned=returned),
        "action_id": f"{session.id}:{session.action_received_at}",
        "claim_url": local(routes.CLAIM.path(token)),
        "handoff_url": local(routes.HANDOFF.path(token)),
        "in_app": script_table(),
        "origins": origins,
        "onward_url": onward,
        "report_url": local(browser_path(token)),  # where the page tells how the step went
        # The cancel form's: where the customer gives up, in the page's language and embedder.
        "cancel_url": local(cancel_path(token)) + _query(lang=lang, embedder=embedder),
    }


def _arg(name: str) -> str | None:
    """A query parameter, or ``None`` (werkzeug's ``get`` builds and drops an exception for
    every missing one)."""
    args = request.args
    return args[name] if name in args else None


def _query(**values: str | bool | None) -> str:
    """A query string of the values given (``True`` as ``1``), or nothing."""
    given = {name: "1" if value is True else value for name, value in values.items() if value}
    return f"?{urlencode(given)}" if given else ""


def _onward(token: str, session: Session) -> str | None:
    """Where the customer goes now that the outcome is known: the token's own return URL, else
    ``BRIDGE_RETURN_URL``, with the outcome (signed with ``BRIDGE_RETURN_SECRET``); ``None``
    when neither is set."""
    settings = bridge().settings
    base = settings.return_url
    wanted = bridge().return_url_of(token)  # remembered: the page's lookup just verified it
    if wanted is not None:
        try:  # an origin taken off BRIDGE_RETURN_ORIGINS since the token was minted: not there
            base = allowed_return_url(
                wanted, return_url=settings.return_url, origins=settings.return_origins
            )
        except ReturnURLRefusedError:
            log.warning("session %s: the token's return URL is no longer allowed", session.id)
    if base is None:
        return None
    return onward_url(
        base,
        session_id=session.id,
        status=session.status.value,
        ts=int(bridge().clock()),
        secret=settings.return_secret,
    )
