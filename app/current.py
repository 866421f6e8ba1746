"""The running app's :class:`app.bridge.Bridge`: how a view finds the domain service, which
itself knows nothing of Quart."""

from __future__ import annotations

from quart import current_app

from .bridge import Bridge


def bridge() -> Bridge:
    """The running app's :class:`Bridge`."""
    running: Bridge = current_app.extensions["bridge"]
    return running
