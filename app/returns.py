"""The return to the partner: where a customer goes once the outcome is known.

The partner's URL gets ``session_id``, ``status`` and ``ts`` (Unix seconds) appended to its query,
and, with ``BRIDGE_RETURN_SECRET``, ``sig``: the lowercase hex HMAC-SHA256 of the whole query
string as sent, up to but not including ``&sig=``. Everything here is pure: no app, no request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

# A return URL as it goes out (percent-encoded) is at most this long: browsers and servers
# handle 2 KB URLs everywhere, and the token that carries it stays well under 8 KB.
RETURN_URL_LONGEST = 2048
# What the bridge appends, in this order (``sig`` last, and only with a secret).
PARAMETERS = ("session_id", "status", "ts", "sig")

# Characters a URL may carry as they are (RFC 3986's reserved and unreserved ones, and ``%``
# when it starts an escape); anything else is percent-encoded (UTF-8), so the URL goes out as
# ASCII a browser sends on unchanged: a partner then signs-checks exactly the bytes it receives.
# Not ``'``: browsers percent-encode it in an http(s) query whatever the server sent.
_AS_IS = "!#$&()*+,/:;=?@[]~%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST_PORT = re.compile(rf"((?:{_LABEL}\.)*{_LABEL})(?::([0-9]{{1,5}}))?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class ReturnURLRefusedError(ValueError):
    """A ``return_url`` a token may not carry; the message says why."""


def onward_url(base: str, *, session_id: str, status: str, ts: int, secret: str | None) -> str:
    """``base`` with the outcome appended to its query (and signed with ``secret``, if any).

    What ``base`` carries stays: its own query first, its fragment last.
    """
    parts = urlsplit(escaped(base))
    outcome = urlencode({"session_id": session_id, "status": status, "ts": str(ts)})
    kept = parts.query
    query = f"{kept}{'' if kept.endswith('&') else '&'}{outcome}" if kept else outcome
    if secret is not None:
        query = f"{query}&sig={signature(secret, query)}"
    return urlunsplit(parts._replace(query=query))


def signature(secret: str, signed: str) -> str:
    """The ``sig`` of a query string (everything before ``&sig=``)."""
    return hmac.new(secret.encode(), signed.encode(), hashlib.sha256).hexdigest()


def escaped(url: str) -> str:
    """``url`` with every character that a URL may not carry as it is percent-encoded; a URL
    that needs none comes back unchanged."""
    return quote(_LONE_PERCENT.sub("%25", url), safe=_AS_IS)


def allowed_return_url(url: str, *, return_url: str | None, origins: Iterable[str]) -> str:
    """``url`` as a token carries it (escaped), if its origin is ``return_url``'s or one of
    ``origins``; otherwise :class:`ReturnURLRefusedError`."""
    if _CONTROL.search(url) or url != url.strip():
        raise ReturnURLRefusedError("return_url carries control characters or surrounding spaces")
    carried = escaped(url)
    if len(carried) > RETURN_URL_LONGEST:
        raise ReturnURLRefusedError(
            f"return_url is longer than {RETURN_URL_LONGEST} characters (percent-encoded)"
        )
    origin = origin_of(carried)
    if origin is None:
        raise ReturnURLRefusedError(
            "return_url must be an absolute http(s) URL with a host (no user part)"
        )
    if origin not in allowed_origins(return_url=return_url, origins=origins):
        raise ReturnURLRefusedError(
            f"the origin {origin} is not in BRIDGE_RETURN_ORIGINS (nor BRIDGE_RETURN_URL's)"
        )
    return carried


def allowed_origins(*, return_url: str | None, origins: Iterable[str]) -> list[str]:
    """The origins a token's ``return_url`` may use, each spelled as :func:`origin_of` does."""
    candidates = [*origins, *([return_url] if return_url else [])]
    allowed = (origin_of(candidate) for candidate in candidates)
    return list(dict.fromkeys(origin for origin in allowed if origin is not None))


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an absolute http(s) URL, lowercase, without the scheme's
    default port; ``None`` for anything else (a user part, a host that is no DNS name)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    netloc = _HOST_PORT.fullmatch(parts.netloc)
    if scheme not in _DEFAULT_PORTS or netloc is None:
        return None
    host, port = netloc[1].lower(), netloc[2]
    number = None if port is None else int(port)
    if number is None or str(number) == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{number}"


def documented_pattern(origins: Iterable[str]) -> str:
    """A JSON Schema ``pattern`` for return URLs of ``origins`` that need no escaping (what
    ``/openapi.json`` shows; the bridge escapes what a browser would)."""
    alternatives = "|".join(_origin_pattern(origin) for origin in origins)
    characters = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?#\[\]-]|%[0-9A-Fa-f]{2})*"
    return rf"^(?:{alternatives})(?:[/?#]{characters})?$"


def _origin_pattern(origin: str) -> str:
    """An origin as :func:`origin_of` spells it, its default port optional; only ``.`` needs
    escaping in a scheme, a DNS name and a port (and ``re.escape`` would also escape ``-``,
    which an ECMA-262 regex in unicode mode refuses)."""
    scheme, _, rest = origin.partition("://")
    port = "" if ":" in rest else f"(?::{_DEFAULT_PORTS[scheme]})?"
    return origin.replace(".", r"\.") + port
