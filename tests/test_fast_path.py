"""The contract of the answers sent below Quart (app.front): refusals are the app's own, a page
reads no request input it has not declared, and a fault below Quart is seen."""

from __future__ import annotations

import ast
import asyncio
import gc
import logging
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Blueprint, Quart, Response, request
from werkzeug.datastructures import Headers, MultiDict

from app import create_app, pages, scope, server
from app.keeping import VariesBy
from app.security import Page

from .conftest import (
    Configured,
    Deployment,
    FakeClock,
    Partner,
    Provider,
    without_request_id,
)
from .payloads import inform, redirect


async def same(first: Any, second: Any) -> None:
    assert (first.status_code, await first.get_data()) == (
        second.status_code,
        await second.get_data(),
    )
    assert without_request_id(first.headers) == without_request_id(second.headers)


# -- refusals ------------------------------------------------------------------------------


async def test_refusals_are_the_same_from_either_path(client: Any, partner: Partner) -> None:
    """The status route's refusals, answered by app.front (a plain query) and by the app (a
    query app.front leaves to it): one translation, the same bytes and headers."""
    path = f"/api/v1/status/{await partner.token()}"
    for where, code in (
        ("/api/v1/status/not-a-token", 404),
        (f"{path}?wait=31", 400),
        (f"{path}?wait=x", 400),
        (f"{path}?wait=", 400),
    ):
        by_front = await client.get(where)
        by_app = await client.get(where + ("&" if "?" in where else "?") + "via=app")
        assert by_front.status_code == code
        await same(by_front, by_app)
        assert by_front.headers["Access-Control-Allow-Origin"] == "*"
        assert by_front.headers["Cache-Control"] == "no-store"


async def test_a_refusal_of_the_rate_limit_is_the_same_from_either_path(
    configured: Configured,
) -> None:
    async with configured(STATUS_RATE_LIMIT=1) as bridge:
        path = f"/api/v1/status/{await bridge.partner.token()}"
        assert (await bridge.client.get(path)).status_code == 200
        by_front = await bridge.client.get(path)
        by_app = await bridge.client.get(f"{path}?via=app")
    assert by_front.status_code == 429 and by_front.headers["Retry-After"] == "60"
    await same(by_front, by_app)


# -- a fault below Quart -------------------------------------------------------------------


def faults(app: Quart, route: str) -> float:
    value: float = app.extensions["bridge"].metrics.fast_path_faults.labels(route)._value.get()
    return value


@pytest.mark.fast_path_fault
async def test_a_fault_below_quart_is_logged_counted_and_answered_by_the_app(
    app: Quart,
    client: Any,
    partner: Partner,
    provider: Provider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever goes wrong while app.front answers, the app answers instead (its JSON error,
    CORS and all); the fault is logged with its traceback and counted, and every other test
    fails on one (tests/conftest.py)."""
    token = await partner.token()
    await provider.deliver("action_required")
    the_bridge = app.extensions["bridge"]

    def broken(*args: object) -> None:
        raise RuntimeError("a fault")

    monkeypatch.setattr(the_bridge.answers, "get", broken)
    with caplog.at_level(logging.ERROR, logger="app.front"):
        status = await client.get(f"/api/v1/status/{token}")
        built = await client.get(f"/pay/{token}")  # kept by app.front on its way
        page = await client.get(f"/pay/{token}")
    assert status.status_code == 500
    assert status.headers["Access-Control-Allow-Origin"] == "*"
    assert built.status_code == page.status_code == 200  # the app built it again
    assert faults(app, "status") == 1 and faults(app, "page") == 1
    logged = [record for record in caplog.records if record.name == "app.front"]
    assert len(logged) == 2
    assert all(record.exc_info and record.exc_info[0] is RuntimeError for record in logged)


async def test_storage_trouble_is_no_fault_the_app_tries_again(
    app: Quart, client: Any, partner: Partner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.store import StorageUnavailableError

    token = await partner.token()
    store = app.extensions["bridge"].store
    working = store.get_session

    async def down_once(session_id: str) -> Any:
        monkeypatch.setattr(store, "get_session", working)
        raise StorageUnavailableError("down")

    monkeypatch.setattr(store, "get_session", down_once)
    assert (await client.get(f"/api/v1/status/{token}")).status_code == 200
    assert faults(app, "status") == 0


# -- what a page reads of the request ------------------------------------------------------


class WatchedHeaders(Headers):
    """Request headers that note every name read (``*`` for a read of them all)."""

    def __init__(self, headers: Headers, read: set[str]) -> None:
        super().__init__(headers)
        self.read = read

    def _get_key(self, key: str) -> str:
        self.read.add(key.lower())
        return super()._get_key(key)

    def getlist(self, key: str, type: Any = None) -> list[Any]:  # noqa: A002
        self.read.add(key.lower())
        return super().getlist(key, type)

    def __iter__(self) -> Iterator[tuple[str, str]]:  # type: ignore[override]
        self.read.add("*")
        return super().__iter__()


class WatchedArgs(MultiDict[str, str]):
    """A query whose every read is noted as ``query``."""

    def __init__(self, args: MultiDict[str, str], read: set[str]) -> None:
        super().__init__(args)
        self.read = read

    def __contains__(self, key: object) -> bool:
        self.read.add("query")
        return super().__contains__(key)

    def __getitem__(self, key: str) -> str:
        self.read.add("query")
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None, type: Any = None) -> Any:  # noqa: A002
        self.read.add("query")
        return super().get(key, default, type)

    def __iter__(self) -> Iterator[str]:
        self.read.add("query")
        return super().__iter__()


def undeclared(read: set[str], declared: VariesBy) -> set[str]:
    """What was read but not declared ("host" is declared by ``host``)."""
    allowed = set(declared.headers)
    if declared.query:
        allowed.add("query")
    if declared.host:
        allowed.add("host")
    return read - allowed


def watch_pages(app: Quart) -> list[tuple[set[str], VariesBy]]:
    """Every page the app answers from now: what it read, and what its note declares."""
    seen: list[tuple[set[str], VariesBy]] = []
    reads: dict[int, set[str]] = {}

    async def watch() -> None:
        read = reads[id(request._get_current_object())] = set()  # type: ignore[attr-defined]
        request.headers = WatchedHeaders(request.headers, read)
        request.__dict__["args"] = WatchedArgs(request.args, read)
        for derived in ("host", "url_root", "host_url", "accept_languages"):  # read afresh
            request.__dict__.pop(derived, None)

    async def collect(response: Response) -> Response:
        read = reads.pop(id(request._get_current_object()), set())  # type: ignore[attr-defined]
        if isinstance(response, Page):
            seen.append((read, response.note.varies_by))
        return response

    app.before_request_funcs.setdefault(None, []).insert(0, watch)
    app.after_request_funcs.setdefault(None, []).append(collect)  # runs first
    return seen


REQUESTS: list[dict[str, Any]] = [
    {},
    {"headers": {"Accept-Language": "ru"}},
    {"headers": {"Sec-Fetch-Dest": "iframe"}},
    {"query_string": {"lang": "ru", "embedder": "https://shop.test", "returned": "1"}},
    {"headers": {"Host": "elsewhere.test", "X-Forwarded-Proto": "https"}},
]


async def every_page(bridge: Deployment, clock: FakeClock) -> int:
    """Each step a customer page shows, read with each kind of request input."""
    client, provider = bridge.client, bridge.provider
    token = await bridge.partner.token()
    pages_read = 0

    async def read_all() -> None:
        nonlocal pages_read
        for kwargs in REQUESTS:
            for path in (f"/pay/{token}", f"/pay/{token}/return"):
                if path.endswith("return") and kwargs:
                    continue  # a return is recorded once; its page is read above
                answer = await client.get(path, **kwargs)
                assert answer.status_code in (200, 303, 410, 502)
                pages_read += 1

    await read_all()  # waiting
    steps = (
        redirect(),
        redirect(method="GET"),
        inform(),
        redirect(url="http://acs.test/", base_url=None),
        {"type": "app_confirmation", "app_confirmation": {"bank": "x"}},
    )
    for minute, interaction in enumerate(steps):
        # Each newer than the last and than the return, so each is shown: after a return the
        # page waits until a newer action comes.
        clock.advance(1)
        updated_at = f"2027-01-15T07:0{minute}:00.000000Z"
        await provider.deliver("action_required", interaction=interaction, updated_at=updated_at)
        await read_all()  # bank by form, bank by link, qr, refused, elsewhere
    clock.advance(3601)
    await read_all()  # expired
    await provider.deliver("payment_finished", updated_at="2027-01-15T09:01:00.000000Z")
    await read_all()  # outcome
    return pages_read


@pytest.mark.parametrize("public_url", [None, "https://pay.shop.test"])
async def test_a_page_reads_no_request_input_it_has_not_declared(
    config: dict[str, Any],
    provider_key: rsa.RSAPrivateKey,
    clock: FakeClock,
    public_url: str | None,
) -> None:
    settings = {name: value for name, value in config.items() if name != "PUBLIC_URL"}
    settings["FRAME_ANCESTORS"] = "https://shop.test"
    if public_url is not None:  # else links are made for the request's host
        settings["PUBLIC_URL"] = public_url
    app = create_app(settings, clock=clock)
    async with app.test_app():
        client = app.test_client()
        seen = watch_pages(app)
        await every_page(
            Deployment(app, client, Provider(client, provider_key), Partner(client)), clock
        )
    assert len(seen) > 20
    for read, declared in seen:
        assert declared == pages.VARIES_BY
        assert not undeclared(read, declared), (
            f"read but not declared: {undeclared(read, declared)}"
        )
    everything_read = set().union(*(read for read, _ in seen))
    assert everything_read >= {"query", "accept-language", "sec-fetch-dest"}
    assert ("host" in everything_read) is (public_url is None)


async def test_the_check_of_declared_inputs_catches_a_page_that_reads_more(
    configured: Configured, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: a declaration that leaves out a header the pages read."""
    monkeypatch.setattr(pages, "VARIES_BY", VariesBy(query=True, host=True))
    async with configured() as bridge:
        seen = watch_pages(bridge.app)
        await every_page(bridge, clock)
    assert any("accept-language" in undeclared(read, declared) for read, declared in seen)


# -- the seams -----------------------------------------------------------------------------


def test_the_server_imports_nothing_of_the_app() -> None:
    """app.server is uvicorn's protocol, bounded: what it offers the app is passed in or put in
    the scope, so it can be read (and replaced) on its own."""
    tree = ast.parse(Path(server.__file__).read_text(encoding="utf-8"))
    imported = [
        node.module or "." if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    relative = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level]
    assert not relative and not [name for name in imported if name.split(".")[0] == "app"]
    assert server.HANG_UP == scope.HANG_UP  # the extension both sides name


def test_quart_still_gives_blueprints_flasks_template_processor() -> None:
    """create_app drops Flask's template context processor from every blueprint; the day Quart
    stops passing it on, this fails, and the dropping goes."""
    bare = Quart(__name__)
    bare.register_blueprint(Blueprint("pages", __name__))
    inherited = [
        processor
        for name, processors in bare.template_context_processors.items()
        if name is not None
        for processor in processors
    ]
    assert any(processor.__module__ == "flask.templating" for processor in inherited)


def test_the_bridge_renders_without_flasks_template_processor(app: Quart) -> None:
    left = [
        processor
        for processors in app.template_context_processors.values()
        for processor in processors
    ]
    assert left and not any(processor.__module__ == "flask.templating" for processor in left)


# -- what a refusal leaves behind ----------------------------------------------------------


class Sink:
    """An ASGI ``send`` that keeps what was sent (an object, so a weak reference can tell
    when nothing holds it any more)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


async def test_a_refusal_below_quart_leaves_nothing_for_the_garbage_collector(app: Quart) -> None:
    """A refusal answered by app.front is freed when the request ends: an exception kept in
    a local would hold the request's frame, and its scope and send, in a reference cycle
    until a full collection."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/v1/status/not-a-token",
        "query_string": b"",
        "headers": [(b"host", b"bridge.test")],
        "scheme": "https",
        "server": ("bridge.test", 443),
        "root_path": "",
        "http_version": "1.1",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sink = Sink()
    gc.collect()
    gc.disable()
    try:
        await app.asgi_app(scope, receive, sink)  # type: ignore[arg-type]
        assert sink.messages[0]["status"] == 404
        watched = weakref.ref(sink)
        del sink
        assert watched() is None
    finally:
        gc.enable()


async def test_a_token_that_expires_while_its_long_poll_is_held_counts_as_a_failure(
    app: Quart, client: Any, partner: Partner, clock: FakeClock
) -> None:
    token = await partner.token()
    path = f"/api/v1/status/{token}"
    etag = (await client.get(path)).headers["ETag"]
    metrics = app.extensions["bridge"].metrics
    before = metrics.token_failures._value.get()
    held = asyncio.create_task(
        client.get(path, query_string={"wait": "30"}, headers={"If-None-Match": etag})
    )
    await asyncio.sleep(0.2)
    clock.advance(6 * 3600 + 1)  # past the token's lifetime
    app.extensions["bridge"].store.changes.publish("ps_1")  # wakes the hold, which reads again
    answer = await asyncio.wait_for(held, timeout=5)
    assert answer.status_code == 404
    assert metrics.token_failures._value.get() == before + 1
