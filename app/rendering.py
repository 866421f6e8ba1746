"""Customer pages rendered in one go: ``await rendering.render("pay/bank.html", **context)``.

Quart compiles every template for Jinja's async mode, in which each block, include and loop is
an async generator awaited piece by piece, though the customer pages call nothing that waits.
They are rendered here by a plain environment over the app's own (the same loader, globals,
filters and translations, with Quart's template context), which gives the same text for about
a third less of the CPU a render takes (docs/benchmarks.md, "The pay route's first reads").
Quart's template signals are not sent for these pages: nothing in the bridge listens.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment
from quart import Quart, current_app

from . import i18n

_EXTENSION = "customer_pages_jinja"


def init_app(app: Quart) -> None:
    """After every global and extension the templates use is on ``app.jinja_env``: the
    overlay shares its globals and filters, and binds its extensions anew."""
    app.extensions[_EXTENSION] = app.jinja_env.overlay(enable_async=False)


async def render(template: str, **context: Any) -> str:
    """``template`` rendered as Quart's ``render_template`` renders it."""
    app: Quart = current_app._get_current_object()  # type: ignore[attr-defined]
    await app.update_template_context(context)
    context.update(i18n.translations())  # the language looked up once, not per sentence
    environment: Environment = app.extensions[_EXTENSION]
    return environment.get_template(template).render(context)
