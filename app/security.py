"""The headers every customer page carries."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence

from markupsafe import Markup
from quart import Quart, Response, request

from .keeping import PageNote

# The one inline script every customer page carries (its settings travel in a JSON block,
# which is data, not script): allowed by its hash, so a page's bytes are the same on every
# answer and can be built once.
PAGE_SCRIPT = "pay/page.js"


class Page(Response):
    """A customer page, with its note for the headers and for :mod:`app.front`."""

    def __init__(self, body: str, status: int, *, note: PageNote) -> None:
        super().__init__(body, status)
        self.note = note


def script_hash(source: str) -> str:
    """A CSP source allowing exactly ``source`` as an inline script."""
    digest = hashlib.sha256(source.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def content_security_policy(
    *, script: str, bank_origin: str | None, frame_ancestors: Sequence[str]
) -> str:
    """Nothing but the page's own script, style and status API; forms only to us and the bank.

    Chromium checks ``form-action`` on every redirect after a submitted form too, and banks
    redirect across their own hosts before coming back, so a page with a bank form also allows
    ``https:``. An insecure (``http://``) bank is named alone, never as a whole scheme.
    """
    form_action = ["'self'"]
    if bank_origin is not None:
        form_action += [bank_origin, "https:"]
    ancestors = " ".join(frame_ancestors) or "'none'"
    directives = [
        "default-src 'none'",
        f"script-src {script}",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        f"form-action {' '.join(form_action)}",
        f"frame-ancestors {ancestors}",
    ]
    return "; ".join(directives)


def protect(response: Response, csp: str, *, framed: bool) -> Response:
    response.headers["Content-Security-Policy"] = csp
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if not framed:
        response.headers["X-Frame-Options"] = "DENY"
    return response


# An origin as browsers write it: scheme, a host of DNS labels, an optional port; nothing else.
# templates/pay/page.js holds the same rule; tests hold both to one table.
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_ORIGIN = re.compile(rf"(https?)://((?:{_LABEL}\.)*{_LABEL})(?::([0-9]{{1,5}}))?")
_PATTERN = re.compile(rf"(https?)://\*\.((?:{_LABEL}\.)*{_LABEL})(?::([0-9]{{1,5}}))?")


def origin_matches(pattern: str, origin: str) -> bool:
    """Whether ``origin`` is ``pattern`` or, for ``https://*.shop.example``, a host under it
    with the same scheme and port. The origin is parsed first: a path, query, fragment or user
    part makes it no origin at all."""
    parsed = _ORIGIN.fullmatch(origin)
    if parsed is None:
        return False
    wild = _PATTERN.fullmatch(pattern)
    if wild is None:
        return origin == pattern
    scheme, host, port = parsed.groups()
    return (scheme, port) == (wild[1], wild[3]) and host.endswith("." + wild[2])


def page_script(app: Quart) -> str:
    """The script every customer page carries inline, as the pages hold it."""
    loader = app.jinja_env.loader
    assert loader is not None
    source: str = loader.get_source(app.jinja_env, PAGE_SCRIPT)[0]
    return source


def init_app(app: Quart, frame_ancestors: Sequence[str]) -> None:
    """Every answer under ``/pay/``, error pages and redirects included, carries the headers;
    every other answer ``nosniff``, and JSON ``no-store`` unless its view chose (the status
    API's ``no-cache`` revalidates with its ETag)."""
    source = page_script(app)
    app.jinja_env.globals["page_script"] = Markup(source)  # our own file, as it is
    script = script_hash(source)

    async def customer_headers(response: Response) -> Response:
        if not request.path.startswith("/pay/"):
            response.headers["X-Content-Type-Options"] = "nosniff"
            if response.mimetype == "application/json" and "Cache-Control" not in response.headers:
                response.headers["Cache-Control"] = "no-store"  # session data, errors
            return response
        bank_origin = response.note.bank_origin if isinstance(response, Page) else None
        csp = content_security_policy(
            script=script, bank_origin=bank_origin, frame_ancestors=frame_ancestors
        )
        return protect(response, csp, framed=bool(frame_ancestors))

    app.after_request(customer_headers)
