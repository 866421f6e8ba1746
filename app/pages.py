"""The customer's pages: ``/pay/{token}`` and the return from the bank."""

from __future__ import annotations

import logging
import secrets
from typing import Any
from urllib.parse import urlencode

import segno
from quart import (
    Blueprint,
    Quart,
    Response,
    abort,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from quart_schema import hide

from . import lifecycle
from .actions import BankForm, QRCode, RefusedActionError, customer_action
from .bridge import bridge
from .lifecycle import Session, Status
from .security import content_security_policy, protect

log = logging.getLogger(__name__)
bp = Blueprint("pages", __name__)

PageAnswer = Response | str | tuple[str, int]


@bp.get("/pay/<token>")
@hide
async def pay(token: str) -> PageAnswer:
    return await _page(token, _session_id(token))


@bp.route("/pay/<token>/return", methods=["GET", "POST"])
@hide
async def came_back(token: str) -> PageAnswer:
    """The customer is back from the bank (whatever the bank posted is not read)."""
    session_id = _session_id(token)
    await bridge().record_return(session_id)
    return await _page(token, session_id)


def _session_id(token: str) -> str:
    session_id = bridge().session_for(token)
    if session_id is None:
        abort(404)
    return session_id


async def _page(token: str, session_id: str) -> PageAnswer:
    session = await bridge().session(session_id)
    session = session or lifecycle.new_session(session_id, bridge().clock())
    context = {"session": session, "page": _script_settings(token, session)}
    if session.timed_out:
        return await render_template("pay/expired.html", **context), 410
    if session.status.is_final:
        return_url = bridge().settings.return_url
        if return_url is not None:
            return redirect(_with_outcome(return_url, session), 303)
        return await render_template("pay/outcome.html", **context)
    if session.status is Status.ACTION_REQUIRED and not session.customer_returned:
        return await _action_page(session, context)
    return await render_template("pay/waiting.html", **context)


async def _action_page(session: Session, context: dict[str, Any]) -> PageAnswer:
    assert session.interaction is not None
    try:
        action = customer_action(
            session.interaction, allow_http=bridge().settings.allow_insecure_acs
        )
    except RefusedActionError as error:
        log.warning("refused a bank instruction: %s", error, extra={"session_id": session.id})
        return await render_template("pay/refused.html", **context), 502
    if isinstance(action, QRCode):
        return await render_template("pay/qr.html", qr=action, **context)
    assert isinstance(action, BankForm)
    g.bank_origin = action.origin
    return await render_template("pay/bank.html", form=action, **context)


def _script_settings(token: str, session: Session) -> dict[str, Any]:
    """What the page's one script needs; never the bank's URL or fields."""
    return {
        "status": session.status.value,
        "final": session.status.is_final,
        # Same-origin paths: the page's CSP allows 'self', whatever BRIDGE_PUBLIC_URL says.
        "status_url": url_for("status.status", token=token),
        "next_url": url_for("pages.pay", token=token),
        "action_id": f"{session.id}:{session.action_received_at}",
        "origins": [origin for origin in bridge().settings.frame_ancestors if "*" not in origin],
    }


def _with_outcome(url: str, session: Session) -> str:
    joiner = "&" if "?" in url else "?"
    return url + joiner + urlencode({"session_id": session.id, "status": session.status.value})


def csp_nonce() -> str:
    """This response's script nonce (made on first use)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


async def customer_headers(response: Response) -> Response:
    """Every answer under ``/pay/``, error pages included, carries the customer headers."""
    if not request.path.startswith("/pay/"):
        return response
    ancestors = bridge().settings.frame_ancestors
    csp = content_security_policy(
        nonce=csp_nonce(), bank_origin=g.get("bank_origin"), frame_ancestors=ancestors
    )
    return protect(response, csp, framed=bool(ancestors))


def init_app(app: Quart) -> None:
    app.register_blueprint(bp)
    app.after_request(customer_headers)
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    app.jinja_env.globals["qr_svg"] = qr_svg


def qr_svg(content: str) -> str:
    """A QR code as an SVG ``data:`` URI: drawn here, so no image comes from elsewhere."""
    return segno.make(content, error="m").svg_data_uri(scale=4, border=2)
