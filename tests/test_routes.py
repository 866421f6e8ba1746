"""Every route the app serves is named here, so a new one cannot arrive untested."""

from __future__ import annotations

from quart import Quart

ROUTES = {
    ("/webhooks/smart-glocal", "POST"),
    ("/api/v1/sessions/<session_id>/tokens", "POST"),
    ("/api/v1/sessions/<session_id>", "GET"),
    ("/api/v1/status/<token>", "GET"),
    ("/api/v1/status/<token>/events", "GET"),
    ("/pay/<token>", "GET"),
    ("/pay/<token>/return", "GET"),
    ("/pay/<token>/return", "POST"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/metrics", "GET"),
    ("/openapi.json", "GET"),
    ("/static/<path:filename>", "GET"),
}


async def test_the_app_serves_exactly_the_known_routes(app: Quart) -> None:
    served = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert served == ROUTES
