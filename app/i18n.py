"""Customer pages in English and Russian, chosen by ``?lang=``, then ``Accept-Language``.

Templates mark text with ``_()`` (Jinja's i18n extension, old style: a translation is text,
escaped like any other value, where the new style would take it as trusted markup and format
it with ``%`` on every call). The catalogs are JSON files in
``app/translations/``, keyed by the English sentence; two languages and a few dozen sentences
need no compiled message catalogs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from quart import Quart, g, request

LANGUAGES = ("en", "ru")

_FOLDER = Path(__file__).resolve().parent / "translations"
_CATALOGS: dict[str, dict[str, str]] = {
    "en": {},
    "ru": json.loads((_FOLDER / "ru.json").read_text(encoding="utf-8")),
}


def language() -> str:
    """This request's language: ``?lang=`` when it names one, else the browser's preference."""
    chosen: str | None = g.get("lang")
    if chosen is None:
        args, headers = request.args, request.headers
        asked = args["lang"] if "lang" in args else None
        if asked in LANGUAGES:
            chosen = asked
        elif "Accept-Language" in headers:
            chosen = request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]
        else:
            chosen = LANGUAGES[0]
        g.lang = chosen
    return chosen


def _translators(catalog: dict[str, str]) -> dict[str, Callable[..., str]]:
    def gettext(message: str) -> str:
        return catalog.get(message, message)

    def ngettext(singular: str, plural: str, count: int) -> str:
        return gettext(singular if count == 1 else plural)

    return {"gettext": gettext, "ngettext": ngettext}


_TRANSLATORS = {name: _translators(catalog) for name, catalog in _CATALOGS.items()}


def translations() -> dict[str, Callable[..., str]]:
    """``gettext`` and ``ngettext`` in this request's language, for a template's context: a
    page says ``_()`` a score of times, and each would look the language up again."""
    return _TRANSLATORS[language()]


def gettext(message: str) -> str:
    return translations()["gettext"](message)


def ngettext(singular: str, plural: str, count: int) -> str:
    return translations()["ngettext"](singular, plural, count)


def init_app(app: Quart) -> None:
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(gettext, ngettext, newstyle=False)  # type: ignore[attr-defined]
    app.jinja_env.globals["lang"] = language
