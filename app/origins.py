"""Whether a browser's request comes from the bridge's own pages.

The customer routes a page posts to (the cancel form, the browser's reports) take the token as
their credential; this only keeps another site's page from using a token it got hold of. A
browser says where a request comes from in ``Sec-Fetch-Site`` and ``Origin``. The bridge's pages
are sent with ``Referrer-Policy: no-referrer``, under which a browser sends ``Origin: null`` on
their own posts: ``null`` names no site, so it is not refused (``Sec-Fetch-Site`` still tells).
A request that says neither (a server, an old browser) is not refused either.
"""

from __future__ import annotations

from quart import request

from .links import external
from .returns import origin_of

# What Sec-Fetch-Site says of a request the bridge's own pages made (or the customer typed).
_OURS = ("same-origin", "none")


def from_another_site() -> bool:
    """Whether this request says it comes from a page of another origin than the bridge's."""
    headers = request.headers
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in _OURS:
        return True
    origin = headers.get("Origin")
    return origin not in (None, "null") and origin_of(origin) != origin_of(external("/"))
