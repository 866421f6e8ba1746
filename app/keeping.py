"""What a customer page declares so that :mod:`app.front` may send it again: the request
inputs it varies by, and the session it was built from.

A kept page is sent to every request whose declared inputs are the same, until its session
changes; so a page must declare every input it reads (``tests/test_fast_path.py`` renders every
page with each request input watched and fails on one read but not declared).
"""

from __future__ import annotations

from dataclasses import dataclass

from .answers import Shown
from .scope import Scope


@dataclass(frozen=True, slots=True)
class VariesBy:
    """Besides its path (and so its token): ``query``, the whole query string; ``host``, the
    scheme and ``Host`` its links are made for; ``headers``, these request headers."""

    query: bool = False
    host: bool = False
    headers: tuple[str, ...] = ()  # lower case

    def key(self, scope: Scope) -> tuple[object, ...]:
        """What a page kept under this declaration is found by, for this request."""
        values: list[object] = [self, scope["path"]]
        if self.query:
            values.append(scope["query_string"])
        if self.host:
            values += [scope["scheme"], header(scope, b"host")]
        values += [header(scope, name.encode()) for name in self.headers]
        return tuple(values)


@dataclass(frozen=True, slots=True)
class PageNote:
    """A customer page's marker, on its way out: what it showed (for the history), the bank's
    origin its form may post to (for the CSP), and whether it may be kept (``keep``), by
    ``varies_by``, until the session changes or ``until`` (the action window's end)."""

    varies_by: VariesBy
    shown: Shown
    keep: bool = False
    until: float | None = None
    bank_origin: str | None = None

    @property
    def session_id(self) -> str:
        return self.shown[0]


@dataclass(frozen=True, slots=True)
class KeptPage:
    """Left in the scope (:data:`app.scope.PAGE`) by a page :mod:`app.front` may keep:
    its note, and the answers' ticket taken before its session was read."""

    note: PageNote
    since: int


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a header, as Quart's ``request.headers.get`` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
