"""The paths :mod:`app.front` answers below Quart and the customer routes', in one place: the
blueprints route them, :mod:`app.links` makes links to them, :mod:`app.front` matches them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

# What a token is made of (URL-safe base64 and dots); app.front answers no other path.
_TOKEN = "[A-Za-z0-9_.-]+"


@dataclass(frozen=True, slots=True)
class Route:
    rule: str  # werkzeug's, with one <token> segment

    def path(self, token: str) -> str:
        """The route's path for ``token``, which stays one path segment whatever it holds."""
        return self.rule.replace("<token>", quote(token, safe=""))

    def pattern(self) -> re.Pattern[str]:
        """The route's paths, the token in group 1 (tokens as minted only)."""
        before, _, after = self.rule.partition("<token>")
        return re.compile(f"{re.escape(before)}({_TOKEN}){re.escape(after)}")


PAY = Route("/pay/<token>")
RETURN = Route("/pay/<token>/return")
CANCEL = Route("/pay/<token>/cancel")
BROWSER = Route("/pay/<token>/browser")
CLAIM = Route("/pay/<token>/claim")  # which page holds the bank step
HANDOFF = Route("/pay/<token>/handoff")  # a link that moves it to another browser
# The link itself: its one path segment is the link's secret, never a token.
HANDOFF_LINK = Route("/pay/handoff/<token>")
STATUS = Route("/api/v1/status/<token>")
STATUS_EVENTS = Route("/api/v1/status/<token>/events")
# The provider's webhooks.
WEBHOOKS = "/webhooks/smart-glocal"
