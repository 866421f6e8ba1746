"""Links to the bridge's own customer routes, from ``BRIDGE_PUBLIC_URL`` or the request.

Built as strings rather than with ``url_for``: werkzeug's URL building was a tenth of the
status route's time, and these paths are the routes' own (``tests/test_links.py`` holds
them to ``url_for``). Tokens are URL-safe by construction; quoting keeps any other string a
single path segment.
"""

from __future__ import annotations

from urllib.parse import quote

from quart import Quart, current_app, request

from .bridge import bridge


def pay_path(token: str) -> str:
    return f"/pay/{quote(token, safe='')}"


def return_path(token: str) -> str:
    return f"{pay_path(token)}/return"


def static_path(filename: str) -> str:
    return f"{current_app.static_url_path}/{quote(filename)}"


def status_path(token: str) -> str:
    return f"/api/v1/status/{quote(token, safe='')}"


def external(path: str) -> str:
    """``path`` (one of the above) as an absolute URL."""
    public_url = bridge().settings.public_url
    if public_url is None:
        return f"{request.scheme}://{request.host}{request.root_path}{path}"
    return public_url + path


def local(path: str) -> str:
    """``path`` as a link within this host (the page's CSP allows only ``'self'``)."""
    return request.root_path + path


def init_app(app: Quart) -> None:
    app.jinja_env.globals.update(local=local, static_path=static_path)
