"""Links built as strings are the routes' own: what ``url_for`` builds, and they route back."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from quart import url_for

from app import create_app
from app.links import external, local, pay_path, return_path, static_path, status_path

TOKEN = "InBzXzEi.awUtXQ.wV9tlM-gvXmlCjD9UcMeSmut5f4"  # what tokens look like: URL-safe
ODD = ["b?c#d e%2F", "ключ", "..", "!$&'()*+,;=:@"]  # never a "/": servers decode %2F
ROUTES = [(pay_path, "pages.pay"), (return_path, "pages.came_back"), (status_path, "status.status")]


@pytest.mark.parametrize("root_path", ["", "/bridge"])
@pytest.mark.parametrize(
    "public_url", [None, "https://pay.shop.test", "https://pay.shop.test/bridge"]
)
async def test_links_are_what_url_for_builds(
    config: dict[str, Any], root_path: str, public_url: str | None
) -> None:
    settings = {name: value for name, value in config.items() if name != "PUBLIC_URL"}
    app = create_app({**settings, "PUBLIC_URL": public_url} if public_url else settings)
    async with app.test_request_context(
        "/", root_path=root_path, scheme="https", headers={"Host": "bridge.test:8443"}
    ):
        # Local links go under the path browsers find the bridge at: BRIDGE_PUBLIC_URL's when
        # it is set (a proxy strips it), else the root path.
        base = root_path if public_url is None else urlsplit(public_url).path
        for path, endpoint in ROUTES:
            route = url_for(endpoint, token=TOKEN).removeprefix(root_path)
            assert local(path(TOKEN)) == base + route
            if public_url is None:
                assert external(path(TOKEN)) == url_for(endpoint, token=TOKEN, _external=True)
            else:  # the configured base is the whole base: no root path added to it
                assert external(path(TOKEN)) == public_url + path(TOKEN)
        for filename in ("css/bridge.css", "favicon.svg", "a b?.css"):
            route = url_for("static", filename=filename).removeprefix(root_path)
            assert local(static_path(filename)) == base + route


@pytest.mark.parametrize("token", ODD)
async def test_other_strings_route_back_to_themselves(config: dict[str, Any], token: str) -> None:
    routes = create_app(config).url_map.bind("bridge.test")
    for path, endpoint in ROUTES:
        method = "POST" if endpoint == "pages.came_back" else "GET"
        decoded = unquote(path(token))  # as the server hands the path to the app
        assert routes.match(decoded, method=method) == (endpoint, {"token": token})
