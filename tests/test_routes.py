"""Every route the app serves is named here, so a new one cannot arrive untested."""

from __future__ import annotations

import inspect
from typing import Any

from quart import Quart, Response

ROUTES = {
    ("/webhooks/smart-glocal", "POST"),
    ("/api/v1/sessions/<session_id>/tokens", "POST"),
    ("/api/v1/sessions/<session_id>", "GET"),
    ("/api/v1/sessions/<session_id>/events", "GET"),
    ("/api/v1/relay/deliveries", "GET"),
    ("/api/v1/relay/test", "POST"),
    ("/api/v1/relay/deliveries/<delivery_id>/retry", "POST"),
    ("/api/v1/relay/deliveries/retry", "POST"),
    ("/api/v1/status/<token>", "GET"),
    ("/api/v1/status/<token>/events", "GET"),
    ("/pay/<token>", "GET"),
    ("/pay/<token>/return", "GET"),
    ("/pay/<token>/return", "POST"),
    ("/pay/<token>/cancel", "POST"),
    ("/pay/<token>/browser", "POST"),
    ("/pay/<token>/claim", "POST"),
    ("/pay/<token>/handoff", "POST"),
    ("/pay/handoff/<token>", "GET"),
    ("/pay/handoff/<token>", "POST"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/metrics", "GET"),
    ("/openapi.json", "GET"),
    ("/static/<path:filename>", "GET"),
    ("/static/js/redirect-bridge.js", "GET"),
    ("/static/js/redirect-bridge-<version>.js", "GET"),
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


async def test_answers_the_app_makes_itself_go_out_untouched(app: Quart, client: Any) -> None:
    """app/__init__.py replaces quart-schema's ``make_response`` wrapper: a ``Response`` goes
    out as it is, anything else still through Quart and quart-schema. An upgrade that changes
    either breaks this."""
    made = Response("as it is", 201, content_type="text/plain")
    async with app.test_request_context("/"):
        assert await app.make_response(made) is made
        converted = await app.make_response(({"status": "ok"}, 202))
    assert converted.status_code == 202
    assert await converted.get_json() == {"status": "ok"}
    assert await (await client.get("/healthz")).get_json() == {"status": "ok"}


async def test_the_openapi_document_keeps_what_the_bridge_adds(client: Any) -> None:
    """app/openapi.py subclasses quart-schema's provider: its additions must still be there."""
    document = await (await client.get("/openapi.json")).get_json()
    read = document["paths"]["/api/v1/sessions/{session_id}"]["get"]
    assert {"200", "401", "404", "429", "503"} <= set(read["responses"])
    parameter = next(p for p in read["parameters"] if p["name"] == "session_id")
    assert parameter["schema"]["pattern"].startswith("^(?:")
    status = document["paths"]["/api/v1/status/{token}"]["get"]["responses"]
    assert {"304", "429"} <= set(status)
