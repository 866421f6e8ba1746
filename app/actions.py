"""What the customer's browser must do for an interaction: a bank step, a QR code, or nothing
here (the customer finishes elsewhere). Pure.

Everything is decided here, server-side, and the page only renders it:
- POST: a form whose ``action`` is the bank URL with its query string (``qs``) kept, and every
  ``params`` entry a hidden field.
- GET: a plain navigation to the bank URL with its own query string kept byte for byte and the
  ``params`` appended. (A GET form would drop the URL's query string and re-encode the rest.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit

import segno

from .provider import field_text

# Browsers read a backslash as a slash in http(s) URLs, so a host could differ from ours.
_REFUSED_CHARACTERS = re.compile(r"[\x00-\x20\x7f\\]")  # white space, controls, backslash
# The bank's host goes into a Content-Security-Policy header: letters, digits, hyphens, dots.
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


class RefusedActionError(ValueError):
    """An instruction the bridge will not put in front of a customer. The message says why."""


@dataclass(frozen=True, slots=True)
class BankStep:
    method: str  # "post": submit ``fields`` to ``url``; "get": go to ``url``
    url: str
    fields: tuple[tuple[str, str], ...]
    origin: str  # scheme://host[:port] of the bank, for Content-Security-Policy form-action


@dataclass(frozen=True, slots=True)
class QRCode:
    content: str
    image: str  # an SVG ``data:`` URI drawn here, so no image comes from elsewhere
    link: str | None  # the content again when it is a URL a phone can open


@dataclass(frozen=True, slots=True)
class Elsewhere:
    """A step the customer finishes outside this page (their bank's app, a wallet's widget):
    an ``inform`` without a QR code, a redirect carrying only ``tds_data``, a type the bridge
    does not know. Nothing to show but words; the page follows the status."""


def customer_action(
    interaction: Mapping[str, Any], *, allow_http: bool
) -> BankStep | QRCode | Elsewhere:
    """What the customer's browser does for an interaction kept by :mod:`app.provider`."""
    kind = interaction.get("type")
    details = interaction.get(kind) if isinstance(kind, str) else None
    if kind == "inform":
        qr = details.get("qr") if isinstance(details, dict) else None
        return _qr_code(qr, allow_http=allow_http) if isinstance(qr, dict) else Elsewhere()
    if kind != "redirect":
        return Elsewhere()
    if not isinstance(details, dict):
        raise RefusedActionError("the redirect is not an object")
    if not (details.get("url") or details.get("base_url")) and "tds_data" in details:
        return Elsewhere()  # ``tds_data`` is kept, never interpreted
    return _bank_step(details, allow_http=allow_http)


def _bank_step(redirect: Mapping[str, Any], *, allow_http: bool) -> BankStep:
    method = redirect.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise RefusedActionError("the method is neither GET nor POST")
    target = _target_url(redirect)
    origin = _origin(_checked_url(target, allow_http=allow_http))
    params = [(name, field_text(value)) for name, value in _pairs(redirect.get("params"))]
    if method.upper() == "POST":
        _check_form_names(name for name, _ in params)
        return BankStep("post", target, tuple(params), origin)
    return BankStep("get", _appended(target, params), (), origin)


def _check_form_names(names: Iterable[str]) -> None:
    """A browser does not submit every field as it is: it drops a field without a name and
    replaces the value of one named ``_charset_`` (any case) with the page's encoding."""
    for name in names:
        if not name:
            raise RefusedActionError("a form field has no name, which a browser would drop")
        if name.lower() == "_charset_":
            raise RefusedActionError(
                "a form field is named _charset_, whose value a browser replaces"
            )


def _target_url(redirect: Mapping[str, Any]) -> str:
    """``url`` is documented as ``base_url`` plus ``qs``; add any ``qs`` pair it lacks."""
    url, base_url = redirect.get("url"), redirect.get("base_url")
    target = url if isinstance(url, str) and url else base_url
    if not isinstance(target, str) or not target:
        raise RefusedActionError("the instruction carries no URL")
    try:
        present = {name for name, _ in parse_qsl(urlsplit(target).query, keep_blank_values=True)}
    except ValueError:
        raise RefusedActionError("the URL cannot be parsed") from None
    missing = [
        (name, field_text(value))
        for name, value in _pairs(redirect.get("qs"))
        if name not in present
    ]
    return _appended(target, missing)


def _appended(url: str, pairs: list[tuple[str, str]]) -> str:
    """``url`` with ``pairs`` added to its query string; what was there is kept byte for byte."""
    if not pairs:
        return url
    head, hash_mark, fragment = url.partition("#")
    joiner = "&" if urlsplit(head).query else ("" if head.endswith("?") else "?")
    return head + joiner + urlencode(pairs) + hash_mark + fragment


def _checked_url(url: str, *, allow_http: bool) -> SplitResult:
    if _REFUSED_CHARACTERS.search(url):
        raise RefusedActionError("the URL holds spaces, backslashes or control characters")
    try:
        parts = urlsplit(url)
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError:
        raise RefusedActionError("the URL cannot be parsed") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        # The reason, never the value: whatever stands there goes into a log line.
        raise RefusedActionError("the URL's scheme is not " + " or ".join(allowed))
    if not parts.hostname or "@" in parts.netloc:
        raise RefusedActionError("the URL has no plain host")
    return parts


def _origin(parts: SplitResult) -> str:
    try:
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except UnicodeError:
        raise RefusedActionError("the URL's host is not a valid domain name") from None
    if not _HOST.fullmatch(host):
        raise RefusedActionError("the URL's host is not a plain domain name or IPv4 address")
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _pairs(value: Any) -> list[tuple[str, Any]]:
    return list(value.items()) if isinstance(value, dict) else []


def qr_image(content: str) -> str:
    """A QR code of ``content`` drawn here, as a ``data:`` URI of SVG (the pages' CSP allows
    ``img-src data:``, and nothing is asked of another site); ``segno.DataOverflowError`` when
    it is too long for one."""
    return str(segno.make(content, error="m").svg_data_uri(scale=4, border=2))


def _qr_code(qr: Mapping[str, Any], *, allow_http: bool) -> QRCode | Elsewhere:
    """A QR code drawn here from its content; without content the bridge can draw (none, or
    too long for a QR code) the customer finishes elsewhere: never an error page."""
    content = qr.get("content")
    if not isinstance(content, str) or not content:
        return Elsewhere()
    try:
        image = qr_image(content)
    except segno.DataOverflowError:
        return Elsewhere()
    try:
        _origin(_checked_url(content, allow_http=allow_http))
        link: str | None = content
    except RefusedActionError:
        link = None
    return QRCode(content=content, image=image, link=link)
