"""What a view reaches of the running app: its :class:`app.bridge.Bridge` (the domain
service, which itself knows nothing of Quart), and the request's ASGI scope, where a view leaves
notes for the layers around the app (:mod:`app.scope`)."""

from __future__ import annotations

from quart import current_app, request

from .bridge import Bridge
from .scope import Scope


def bridge() -> Bridge:
    """The running app's :class:`Bridge`."""
    running: Bridge = current_app.extensions["bridge"]
    return running


def mark(key: str, value: object) -> None:
    """Leave ``value`` under ``key`` (one of :mod:`app.scope`'s) in this request's scope."""
    scope: Scope = request.scope  # type: ignore[assignment]  # a dict; hypercorn types it closed
    scope[key] = value
