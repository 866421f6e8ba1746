"""The embedding script as a dependency a partner can pin.

``/static/js/redirect-bridge.js`` follows the bridge's upgrades. Every released version of it
is kept beside it as ``js/redirect-bridge-{version}.js`` and served at that URL, which never
changes: cached for a year, and checked by the partner's page with the Subresource Integrity
hash the README publishes. An upgrade of the bridge keeps serving the versions partners pinned
(``tests/test_script.py`` holds the newest release to the script's bytes). Both answer CORS,
without which a browser checks no integrity of a script from another origin.
"""

from __future__ import annotations

import re

from quart import Blueprint, Response, abort, current_app
from quart_schema import hide

SCRIPT = "js/redirect-bridge.js"
IMMUTABLE = "public, max-age=31536000, immutable"
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+)*")

bp = Blueprint("script", __name__)


@bp.get(f"/static/{SCRIPT}")
@hide
async def moving() -> Response:
    return _shared(await current_app.send_static_file(SCRIPT))


@bp.get("/static/js/redirect-bridge-<version>.js")
@hide
async def pinned(version: str) -> Response:
    if not _VERSION.fullmatch(version):
        abort(404)
    response = await current_app.send_static_file(f"js/redirect-bridge-{version}.js")
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers.pop("Expires", None)
    return _shared(response)


def _shared(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
