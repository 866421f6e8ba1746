"""Redirect Bridge: Smart Glocal's 3-D Secure redirects, done once and properly."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from quart import Quart, has_request_context, request
from quart.wrappers import BaseRequestWebsocket
from quart_schema import QuartSchema
from werkzeug.routing import RequestRedirect

from . import (
    api,
    assets,
    deliveries,
    errors,
    history,
    holders,
    i18n,
    links,
    logs,
    ops,
    pages,
    probe,
    rendering,
    reports,
    script,
    security,
    status,
    telemetry,
    webhooks,
)
from .bridge import Bridge
from .config import load_settings
from .front import Front
from .openapi import BridgeOpenAPI
from .scope import ASGIApp
from .telemetry import Telemetry

__version__ = "0.2.0"
# Seconds a route waits for a request's body before answering 408 (Quart's default is 60). The
# bodies the bridge reads are small (webhooks of at most 64 KB, a bank's form post): a client
# that takes longer is holding a connection open, not sending.
BODY_TIMEOUT = 10
_FROZEN = False


class BridgeApp(Quart):
    """Quart, but an unhandled error is logged with the route, never the path: customer paths
    carry tokens, which are credentials."""

    def log_exception(self, exception_info: Any) -> None:
        if not has_request_context():  # start-up or shut-down: say what failed, not why not
            self.logger.error("Exception outside a request", exc_info=exception_info)
            return
        rule = request.url_rule.rule if request.url_rule else "(no route)"
        self.logger.error("Exception on %s %s", request.method, rule, exc_info=exception_info)

    def raise_routing_exception(self, request: BaseRequestWebsocket) -> NoReturn:
        """werkzeug redirects ``/pay//T`` to ``/pay/T``, a URL it builds from the ``Host``
        header: the client's choice. The same redirect, to the bridge's own base instead."""
        error = request.routing_exception
        if isinstance(error, RequestRedirect):
            raise RequestRedirect(links.redirected(self.url_map, request))
        assert error is not None
        raise error


def create_app(
    config: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> Quart:
    """Build the app: defaults, then ``BRIDGE_*`` variables of ``environ``, then ``config``.

    ``environ`` is the process environment unless given (the demo passes ``{}``). ``config``
    takes the same names with or without the prefix. ``clock`` (Unix seconds) replaces the wall
    clock, for tests. Raises :class:`app.config.ConfigError`.
    """
    settings = load_settings(environ, config)

    app = BridgeApp(
        __name__, template_folder=str(assets.TEMPLATES), static_folder=str(assets.STATIC)
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_bytes
    app.config["BODY_TIMEOUT"] = BODY_TIMEOUT
    app.extensions["bridge"] = bridge = Bridge.from_settings(settings, clock)
    QuartSchema(
        app,
        info={"title": "Redirect Bridge", "version": __version__},
        swagger_ui_path=None,  # the documentation UIs load scripts from CDNs; the JSON is enough
        redoc_ui_path=None,
        scalar_ui_path=None,
        security_schemes={"partnerKey": {"type": "http", "scheme": "bearer"}},
        openapi_provider_class=BridgeOpenAPI,
    )
    logs.init_app(settings.log_format)
    errors.init_app(app)
    security.init_app(app, settings.frame_ancestors)
    i18n.init_app(app)
    links.init_app(app)
    rendering.init_app(app)  # after every template global
    app.register_blueprint(pages.bp)
    app.register_blueprint(reports.bp)
    app.register_blueprint(holders.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(deliveries.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(script.bp)
    app.register_blueprint(probe.bp)
    telemetry.init_app(app)
    shared = security.page_script(app).encode()  # in every page: kept pages share it
    _wrap(
        app,
        lambda inner: Front(inner, bridge, status.CORS, body_timeout=BODY_TIMEOUT, shared=shared),
    )
    _wrap(app, lambda inner: Telemetry(inner, bridge.metrics))  # the outermost
    _drop_flask_template_context(app)
    app.before_serving(bridge.start)
    app.before_serving(_freeze_startup_objects)
    app.after_serving(bridge.stop)
    return app


def serve_app() -> Any:
    """What ``redirect-bridge serve`` runs: :func:`create_app`'s ASGI callable itself. Calling
    the Quart object only calls this, and its frame would stay with every held long-poll."""
    return create_app().asgi_app


def _wrap(app: Quart, layer: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put ``layer`` around the app's ASGI callable, as Quart documents middleware
    (``app.asgi_app = Middleware(app.asgi_app)``). Quart types scopes and messages as
    hypercorn's closed dicts; the layers, plain mappings."""
    inner: ASGIApp = app.asgi_app  # type: ignore[assignment]
    app.asgi_app = layer(inner)  # type: ignore[assignment, method-assign]


def _drop_flask_template_context(app: Quart) -> None:
    """Quart's blueprints inherit Flask's own template context processor. It reads Flask's
    context, which a Quart app never has, so it adds nothing; but it is a plain function, so
    Quart runs it in a worker thread on every page rendered (what that costs a page is in
    docs/benchmarks.md). Quart's own processor, the app's, gives templates ``g``,
    ``request`` and ``session``."""
    for name, processors in app.template_context_processors.items():
        if name is not None:
            processors[:] = [p for p in processors if p.__module__ != "flask.templating"]


async def _freeze_startup_objects() -> None:
    """What is built at startup (modules, routes, templates, models) lives as long as the
    process: the garbage collector's full passes need not walk it again and again. Once per
    process (a test run starts many apps; objects of the ones before must stay collectable)."""
    global _FROZEN
    if not _FROZEN:
        _FROZEN = True
        gc.collect()
        gc.freeze()
