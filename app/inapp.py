"""Known in-app browsers: the browsers of apps (Instagram, Facebook, Messenger, WeChat, TikTok,
LINE) and Android's WebView, in which a bank's 3-D Secure page often cannot be finished (its
app switch, cookies or windows fail there).

The table is kept here alone; the customer pages' script gets it in its settings and matches
``navigator.userAgent`` against it, in the browser, so the pages' bytes stay the same for every
user agent (the server reads no ``User-Agent``). Each marker is plain text looked for in the
user agent, the same way in Python and JavaScript; the first browser with a marker found is the
one, so an app whose markers another's contain comes first (Messenger before Facebook, every
app before the WebView they all run in).
"""

from __future__ import annotations

from typing import NamedTuple


class InAppBrowser(NamedTuple):
    name: str
    markers: tuple[str, ...]  # any one in a user agent names this browser


IN_APP_BROWSERS: tuple[InAppBrowser, ...] = (
    # Messenger says FBAN/FBAV like Facebook, and names itself besides.
    InAppBrowser("Messenger", ("MessengerForiOS", "MessengerLiteForiOS", "Orca-Android")),
    InAppBrowser("Facebook", ("FBAN/", "FBAV/", "FB_IAB/")),
    InAppBrowser("Instagram", ("Instagram ",)),
    InAppBrowser("WeChat", ("MicroMessenger/",)),
    # TikTok (musical_ly on iOS, trill or musically on Android) runs ByteDance's WebView.
    InAppBrowser("TikTok", ("BytedanceWebview/", "musical_ly")),
    InAppBrowser("LINE", (" Line/",)),
    # Any other app's Android WebView: Android puts "; wv)" in its user agent.
    InAppBrowser("Android WebView", ("; wv)",)),
)


def in_app_browser(user_agent: str) -> str | None:
    """The name of the in-app browser ``user_agent`` is, or ``None`` for any other."""
    for browser in IN_APP_BROWSERS:
        if any(marker in user_agent for marker in browser.markers):
            return browser.name
    return None


def script_table() -> list[list[object]]:
    """The table as the pages' script reads it: ``[[name, [marker, …]], …]``."""
    return [[browser.name, list(browser.markers)] for browser in IN_APP_BROWSERS]
