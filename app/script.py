"""The embedding script as a dependency a partner can pin.

``/static/js/redirect-bridge.js`` follows the bridge's upgrades; the same bytes are also served
at ``/static/js/redirect-bridge-{version}.js``, which never changes: cached for a year, and
checked by the partner's page with the Subresource Integrity hash the README publishes (a new
script is a new version). Both answer CORS, without which a browser checks no integrity of a
script from another origin.
"""

from __future__ import annotations

from importlib.metadata import version

from quart import Blueprint, Response, current_app
from quart_schema import hide

SCRIPT = "js/redirect-bridge.js"
PINNED = f"/static/js/redirect-bridge-{version('redirect-bridge')}.js"
IMMUTABLE = "public, max-age=31536000, immutable"

bp = Blueprint("script", __name__)


@bp.get(f"/static/{SCRIPT}")
@hide
async def moving() -> Response:
    return _shared(await current_app.send_static_file(SCRIPT))


@bp.get(PINNED)
@hide
async def pinned() -> Response:
    response = await current_app.send_static_file(SCRIPT)
    response.headers["Cache-Control"] = IMMUTABLE
    response.headers.pop("Expires", None)
    return _shared(response)


def _shared(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
