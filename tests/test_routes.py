"""Every route the app serves is named here, so a new one cannot arrive untested."""

from __future__ import annotations

import inspect
from typing import Any

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


async def test_no_request_sends_work_to_a_worker_thread(
    app: Quart, provider: Any, partner: Any, client: Any
) -> None:
    """Quart runs any plain function it is given (a hook, a template context processor) in a
    thread of its executor: a hop per request that nothing here needs."""
    handed_to_threads: list[Any] = []
    ensure_async = app.ensure_async

    def watching(func: Any) -> Any:
        if not inspect.iscoroutinefunction(func):
            handed_to_threads.append(func)
        return ensure_async(func)

    app.ensure_async = watching  # type: ignore[method-assign]
    token = await partner.token()
    await provider.deliver("action_required")
    for path in (f"/pay/{token}", f"/api/v1/status/{token}", f"/pay/{token}/return", "/nope"):
        assert (await client.get(path)).status_code in (200, 404)
    assert handed_to_threads == []
