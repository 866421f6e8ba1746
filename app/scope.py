"""What the app's ASGI layers leave for one another in a request's scope, and the ASGI types
they share.

Quart keeps the ASGI scope as ``request.scope``; a view may leave a note under one of these
keys (:func:`app.current.mark`), and the layers around the app read it as the answer goes out:

- :data:`ROUTE`: the matched route, as the metrics label it (:mod:`app.telemetry`);
- :data:`LONG_POLL`: the answer was held on purpose, so its time is timed apart;
- :data:`PAGE`: a :class:`app.keeping.KeptPage` when :mod:`app.front` may keep this page and
  send it again until its session changes.

:data:`HANG_UP` is an ASGI extension a server may offer (``redirect-bridge serve`` does,
:mod:`app.server`): ``scope["extensions"][HANG_UP]`` is a dict, and a future the app puts in it
under ``"future"`` is completed by the server once the client hangs up, so a held long-poll
needs no task of its own reading for ``http.disconnect``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE = "redirect_bridge.route"
LONG_POLL = "redirect_bridge.long_poll"
PAGE = "redirect_bridge.page"
HANG_UP = "redirect_bridge.hang_up"
