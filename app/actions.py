"""What the customer's browser must do for an interaction: a bank form, or a QR code. Pure.

The browser can only be trusted with one thing about a form: it submits the fields we give it.
So everything is decided here, server-side, and the page only renders it:
- POST: the form's ``action`` is the bank URL with its query string (``qs``) kept, and every
  ``params`` entry is a hidden field.
- GET: a browser submitting a GET form replaces the action's query string with the form's fields,
  so the query string's own pairs travel as fields too, ahead of ``params``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .provider import field_text

# Browsers read a backslash as a slash in http(s) URLs, so a host could differ from ours.
_REFUSED_CHARACTERS = {chr(code) for code in range(0x21)} | {"\x7f", "\\"}


class RefusedActionError(ValueError):
    """An instruction the bridge will not put in front of a customer. The message says why."""


@dataclass(frozen=True, slots=True)
class BankForm:
    method: str  # "get" or "post"
    action: str
    fields: tuple[tuple[str, str], ...]
    origin: str  # scheme://host[:port] of the bank, for Content-Security-Policy form-action


@dataclass(frozen=True, slots=True)
class QRCode:
    content: str
    link: str | None  # the content again when it is a URL a phone can open


def customer_action(interaction: Mapping[str, Any], *, allow_http: bool) -> BankForm | QRCode:
    """The form or QR code for an interaction kept by :mod:`app.provider`."""
    if interaction.get("type") == "inform":
        return _qr_code(interaction["inform"], allow_http=allow_http)
    return _bank_form(interaction["redirect"], allow_http=allow_http)


def _bank_form(redirect: Mapping[str, Any], *, allow_http: bool) -> BankForm:
    method = redirect.get("method", "POST")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise RefusedActionError("the method is neither GET nor POST")
    target = _target_url(redirect)
    parts = _checked_url(target, allow_http=allow_http)
    params = [(name, field_text(value)) for name, value in _pairs(redirect.get("params"))]
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    if method.upper() == "POST":
        return BankForm("post", target, tuple(params), origin)
    query = parse_qsl(parts.query, keep_blank_values=True)
    action = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return BankForm("get", action, tuple(query + params), origin)


def _target_url(redirect: Mapping[str, Any]) -> str:
    """``url`` is documented as ``base_url`` plus ``qs``; add any ``qs`` pair it lacks."""
    url, base_url = redirect.get("url"), redirect.get("base_url")
    target = url if isinstance(url, str) and url else base_url
    if not isinstance(target, str) or not target:
        raise RefusedActionError("the instruction carries no URL")
    try:
        query = urlsplit(target).query
    except ValueError:  # e.g. an unclosed "[": refuse it like any other bad URL, never crash
        raise RefusedActionError("the URL cannot be parsed") from None
    present = {name for name, _ in parse_qsl(query, keep_blank_values=True)}
    missing = [
        (name, field_text(value))
        for name, value in _pairs(redirect.get("qs"))
        if name not in present
    ]
    if not missing:
        return target
    head, _, fragment = target.partition("#")
    joiner = "&" if urlsplit(head).query else ("" if head.endswith("?") else "?")
    return head + joiner + urlencode(missing) + (f"#{fragment}" if fragment else "")


def _checked_url(url: str, *, allow_http: bool) -> Any:
    if any(character in _REFUSED_CHARACTERS for character in url):
        raise RefusedActionError("the URL holds spaces, backslashes or control characters")
    try:
        parts = urlsplit(url)
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError:
        raise RefusedActionError("the URL cannot be parsed") from None
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        raise RefusedActionError(f"the URL scheme {parts.scheme or '(none)'!r} is not allowed")
    if not parts.hostname or "@" in parts.netloc:
        raise RefusedActionError("the URL has no plain host")
    return parts


def _pairs(value: Any) -> list[tuple[str, Any]]:
    return list(value.items()) if isinstance(value, dict) else []


def _qr_code(inform: Mapping[str, Any], *, allow_http: bool) -> QRCode:
    qr = inform.get("qr") if isinstance(inform.get("qr"), dict) else {}
    content = qr.get("content")
    if not isinstance(content, str) or not content:
        raise RefusedActionError("the QR code has no content")
    try:
        _checked_url(content, allow_http=allow_http)
        link: str | None = content
    except RefusedActionError:
        link = None
    return QRCode(content=content, link=link)
