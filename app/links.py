"""Links to the bridge's own customer routes, from ``BRIDGE_PUBLIC_URL`` or the request.

Built as strings from :mod:`app.routes` rather than with ``url_for``, whose URL building is
costly for links made on every answer (``tests/test_links.py`` holds them to ``url_for``).
Tokens are URL-safe by construction; quoting keeps any other string a single path segment.

``BRIDGE_PUBLIC_URL`` may carry a path (``https://shop.example/bridge``) that a proxy strips
before the request reaches the app: browsers find every route under it, so local links and
redirects are made under it too, never from the request's ``Host``.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import quote, urlsplit

from quart import Quart, abort, current_app, request
from quart.wrappers import BaseRequestWebsocket
from werkzeug.routing import Map, RequestRedirect

from . import routes
from .current import bridge

_NO_HOST = "bridge.invalid"  # the host redirects are matched on (.invalid: never a real one)


pay_path = routes.PAY.path
return_path = routes.RETURN.path
cancel_path = routes.CANCEL.path
browser_path = routes.BROWSER.path
status_path = routes.STATUS.path


def static_path(filename: str) -> str:
    return f"{current_app.static_url_path}/{quote(filename)}"


def external(path: str) -> str:
    """``path`` (one of the above) as an absolute URL."""
    public_url = bridge().settings.public_url
    if public_url is None:
        return f"{request.scheme}://{request.host}{request.root_path}{path}"
    return public_url + path


def local(path: str) -> str:
    """``path`` as a link within this host (the page's CSP allows only ``'self'``), under the
    path of ``BRIDGE_PUBLIC_URL`` when it is set, else under the request's root path."""
    public_url = bridge().settings.public_url
    if public_url is None:
        return request.root_path + path
    return _path_of(public_url) + path


def redirected(routes: Map, asked: BaseRequestWebsocket) -> str:
    """Where werkzeug's redirect of ``asked`` to its canonical path (``/pay//T`` to
    ``/pay/T``, the query kept) goes: under ``BRIDGE_PUBLIC_URL`` when it is set, else a path
    of this host. werkzeug builds it from the ``Host`` header, which the client chooses: here
    the path is matched again on a host of our own, and only its path and query are kept."""
    adapter = routes.bind(
        _NO_HOST,
        url_scheme="http",
        path_info=asked.path,
        default_method=asked.method,
        query_args=asked.query_string.decode(),
    )
    try:
        adapter.match()
    except RequestRedirect as redirect:
        path = redirect.new_url.removeprefix(f"http://{_NO_HOST}")
    else:
        raise AssertionError("no redirect when matched again")
    if any(segment in (".", "..") for segment in urlsplit(path).path.split("/")):
        abort(404)  # a browser would resolve it, out of the prefix: no route of the bridge's
    public_url = bridge().settings.public_url
    return asked.root_path + path if public_url is None else public_url + path


@cache
def _path_of(url: str) -> str:
    return urlsplit(url).path


def init_app(app: Quart) -> None:
    app.jinja_env.globals.update(local=local, static_path=static_path)
