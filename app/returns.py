"""The return to the partner: where a customer goes once the outcome is known.

The partner's URL gets ``session_id``, ``status`` and ``ts`` (Unix seconds) appended to its query,
and, with ``BRIDGE_RETURN_SECRET``, ``sig``: the lowercase hex HMAC-SHA256 of the whole query
string as sent, up to but not including ``&sig=``. A URL whose query already names one of those
is refused (as a partner's framework would read the names), since the partner could read its
value instead of the bridge's. Everything here is pure: no app, no request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote_plus, urlencode, urlsplit, urlunsplit

# A return URL as it goes out (percent-encoded) is at most this long: browsers and servers
# handle 2 KB URLs everywhere, and the token that carries it stays well under 8 KB.
RETURN_URL_LONGEST = 2048
# What the bridge appends, in this order (``sig`` last, and only with a secret).
_OWN_NAMES = ("session_id", "status", "ts", "sig")

# Characters a URL may carry as they are (RFC 3986's reserved and unreserved ones, and ``%``
# when it starts an escape); anything else is percent-encoded (UTF-8), so the URL goes out as
# ASCII a browser sends on unchanged: a partner then signs-checks exactly the bytes it receives.
# Not ``'``: browsers percent-encode it in an http(s) query whatever the server sent.
_AS_IS = "!#$&()*+,/:;=?@[]~%"
_LONE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")  # a lone one, from JSON's "\\ud800": no UTF-8
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_HOST_PORT = re.compile(rf"((?:{_LABEL}\.)*{_LABEL})(?::([0-9]{{1,5}}))?", re.IGNORECASE)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# How a partner's framework may read a query name as one of the bridge's own: characters it
# takes for each one's (ASP.NET compares names ignoring case, and the long s and the dotless i
# are "S" and "I" in upper case; PHP reads " ", "." and an unclosed "[" in a name as "_").
_SPELLINGS = {
    **{letter: letter + letter.upper() for letter in "adegnotu"},
    "s": "sS\u017f",
    "i": "iI\u0131",
    "_": "_ .[",
}
_SEPARATORS = re.compile("[&;]")  # ";" too: Rack and Pythons before 3.9.2 split on it


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


def joinable(url: str) -> str:
    """``url`` escaped, if the outcome can be appended to it and read back as the bridge's: it
    parses, and no name in its query reads as one of :data:`_OWN_NAMES` (a partner's framework
    that takes the first value would take the URL's). Otherwise :class:`ReturnURLRefusedError`,
    its message a clause to follow the URL's name (a token's ``return_url``, BRIDGE_RETURN_URL)."""
    if _CONTROL.search(url) or url != url.strip():
        raise ReturnURLRefusedError("carries control characters or surrounding spaces")
    if _SURROGATE.search(url):
        raise ReturnURLRefusedError("carries a lone surrogate, which is no character")
    carried = escaped(url)
    try:
        query = urlsplit(carried).query
    except ValueError:  # what urlsplit refuses once escaped: brackets around no IP address
        raise ReturnURLRefusedError(
            "does not parse as a URL: its host has brackets around no IPv6 address"
        ) from None
    named = _bridges_own(query)
    if named is not None:
        raise ReturnURLRefusedError(
            f"already names {named[:40]!r} in its query: the bridge appends"
            f" {', '.join(_OWN_NAMES)}"
            " itself, and a partner could read that value instead of the bridge's"
        )
    return carried


def allowed_return_url(url: str, *, return_url: str | None, origins: Iterable[str]) -> str:
    """``url`` as a token carries it (escaped), if it is :func:`joinable` and its origin is
    ``return_url``'s or one of ``origins``; otherwise :class:`ReturnURLRefusedError`."""
    try:
        carried = joinable(url)
    except ReturnURLRefusedError as error:
        raise ReturnURLRefusedError(f"return_url {error}") from None
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
    default port; ``None`` for anything else (a user part, a host that is no DNS name, a URL
    that does not parse)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
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
    ``/openapi.json`` shows; the bridge escapes what a browser would), without a query name
    that reads as one of the bridge's own (a lookahead ECMA-262 knows too)."""
    alternatives = "|".join(_origin_pattern(origin) for origin in origins)
    characters = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?#\[\]-]|%[0-9A-Fa-f]{2})*"
    return rf"^(?:{alternatives})(?!{_naming_own_pattern()})(?:[/?#]{characters})?$"


def _bridges_own(query: str) -> str | None:
    """The first name in ``query`` (as written) that a partner's framework could read as one
    of the bridge's own parameters, percent-decoded as it decodes it; ``None`` when none does."""
    for part in _SEPARATORS.split(query):
        written = part.partition("=")[0]
        name = unquote_plus(written).strip(" ")
        if _CONTROL.search(name):  # PHP cuts a name at a NUL: "status%00x" is status
            return written
        cut = name.partition("[")[0].strip(" ")  # PHP: "status[]" is an array named status
        if any(_reads_as(candidate, own) for candidate in (name, cut) for own in _OWN_NAMES):
            return written
    return None


def _reads_as(name: str, own: str) -> bool:
    return len(name) == len(own) and all(c in _SPELLINGS[o] for c, o in zip(name, own, strict=True))


def _naming_own_pattern() -> str:
    """What :func:`_bridges_own` finds, as a regex to look ahead from the end of the origin;
    in odd corners a little more (``session[id[x]``, a control character in a value too),
    never less."""
    spaces = "(?:\\+|%20)*"
    names = "|".join("".join(_one_of(_SPELLINGS[letter]) for letter in own) for own in _OWN_NAMES)
    ends = "(?:[=&;#\\[]|%5[Bb]|$)"
    control = "%(?:[01][0-9A-Fa-f]|7[Ff]|[Cc]2%[89][0-9A-Fa-f])"
    return f"[^?#]*\\?(?:(?:[^#]*[&;])?{spaces}(?:{names}){spaces}{ends}|[^#]*{control})"


def _one_of(characters: str) -> str:
    """A regex for any of ``characters`` in a URL that needs no escaping: as it is, where it
    may be, or percent-encoded (UTF-8, hex digits of either case)."""
    forms = []
    for character in characters:
        if character.isascii() and character.isalpha() or character == "_":
            forms.append(character)
        elif character in ".[":
            forms.append("\\" + character)
        elif character == " ":
            forms.append("\\+")
        encoded = "".join(f"%{byte:02X}" for byte in character.encode())
        forms.append(re.sub("[A-F]", lambda digit: f"[{digit[0]}{digit[0].lower()}]", encoded))
    return f"(?:{'|'.join(forms)})"


def _origin_pattern(origin: str) -> str:
    """An origin as :func:`origin_of` spells it, its default port optional; only ``.`` needs
    escaping in a scheme, a DNS name and a port (and ``re.escape`` would also escape ``-``,
    which an ECMA-262 regex in unicode mode refuses)."""
    scheme, _, rest = origin.partition("://")
    port = "" if ":" in rest else f"(?::{_DEFAULT_PORTS[scheme]})?"
    return origin.replace(".", r"\.") + port
