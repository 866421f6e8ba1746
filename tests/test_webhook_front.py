"""A plain ``POST /webhooks/smart-glocal`` is received below Quart (app.front): the same bytes,
counts, stored rows and log lines as the app's own route, under the app's own limits."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.routes import WEBHOOKS
from app.signature import sign
from app.store import StorageUnavailableError

from .database import query
from .payloads import webhook

Message = dict[str, Any]


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    by_quart: bool


class Dispatches:
    """Counts the requests Quart itself dispatched."""

    def __init__(self, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        dispatch = app.full_dispatch_request

        async def counted(*args: Any) -> Any:
            self.count += 1
            return await dispatch(*args)

        monkeypatch.setattr(app, "full_dispatch_request", counted)


@pytest.fixture
def dispatches(app: Any, monkeypatch: pytest.MonkeyPatch) -> Dispatches:
    return Dispatches(app, monkeypatch)


async def post(
    app: Any,
    dispatches: Dispatches,
    messages: Iterable[Message],
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    by_quart: bool = False,
) -> Answer:
    """One request to the app's ASGI callable, as a server gives it: the answer's exact
    headers (the request id left out) and body, and whether Quart dispatched it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": WEBHOOKS,
        "raw_path": WEBHOOKS.encode(),
        "query_string": b"via=app" if by_quart else b"",
        "root_path": "",
        "headers": [(b"host", b"bridge.test"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    waiting = list(messages)

    async def receive() -> Message:
        if waiting:
            return waiting.pop(0)
        await asyncio.Event().wait()  # a client that sends nothing more
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    before = dispatches.count
    await app.asgi_app(scope, receive, send)
    if not sent:
        return Answer(0, [], b"", dispatches.count > before)
    start, *bodies = sent
    kept = [(name, value) for name, value in start["headers"] if name != b"x-request-id"]
    body = b"".join(message.get("body", b"") for message in bodies)
    return Answer(start["status"], kept, body, dispatches.count > before)


def assert_same(by_app: Answer, by_front: Answer, *, tried_again: bool = False) -> None:
    """The same answer; the second by the front unless it left the request to the app."""
    assert (by_app.by_quart, by_front.by_quart) == (True, tried_again)
    assert (by_front.status, by_front.headers, by_front.body) == (
        by_app.status,
        by_app.headers,
        by_app.body,
    )


def whole(body: bytes) -> list[Message]:
    return [{"type": "http.request", "body": body, "more_body": False}]


def signed(
    key: rsa.RSAPrivateKey, body: bytes, signature: str | None = None
) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-partner-sign", (signature if signature is not None else sign(key, body)).encode()),
    ]


def metric(app: Any, kind: str, outcome: str) -> float:
    counter = app.extensions["bridge"].metrics.webhooks
    value: float = counter.labels(kind, outcome)._value.get()
    return value


CASES: dict[str, tuple[bytes | None, str | None]] = {
    # name: (body, or None for a new webhook of a session of each path's own; signature)
    "accepted": (None, None),
    "old, ignored": (
        json.dumps(
            webhook("action_required", "ps_old", updated_at="2001-01-01T00:00:00Z")
        ).encode(),
        None,
    ),
    "no signature": (b"{}", ""),
    "a signature of other bytes": (b'{"type": "action_required"}', "c2lnbmF0dXJl"),
    "not JSON": (b"{not json", None),
    "NaN": (b'{"type": NaN}', None),
    "nested too deeply": (b"[" * 100_000 + b"]" * 100_000, None),
    "JSON, no webhook": (b'{"type": "action_required"}', None),
    "a lone surrogate": (
        json.dumps(webhook("action_required", "ps_\ud800x"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        ),
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_answer_is_the_apps_own_byte_for_byte(
    app: Any, dispatches: Dispatches, provider_key: rsa.RSAPrivateKey, case: str
) -> None:
    answers = []
    for by_quart in (True, False):
        body, signature = CASES[case]
        if body is None:
            body = json.dumps(webhook("action_required", f"ps_{by_quart}")).encode()
        headers = signed(provider_key, body, signature)
        if signature == "":
            headers = headers[:2]
        answers.append(await post(app, dispatches, whole(body), headers=headers, by_quart=by_quart))
    by_app, by_front = answers
    assert_same(by_app, by_front)


async def test_the_same_bytes_are_stored_and_counted_once_and_then_a_duplicate(
    app: Any, dispatches: Dispatches, provider_key: rsa.RSAPrivateKey, config: dict[str, Any]
) -> None:
    body = json.dumps(webhook("action_required", "ps_front")).encode()
    first = await post(app, dispatches, whole(body), headers=signed(provider_key, body))
    again = await post(app, dispatches, whole(body), headers=signed(provider_key, body))
    assert (first.by_quart, again.by_quart) == (False, False)
    assert (first.body, again.body) == (b'{"status": "accepted"}', b'{"status": "duplicate"}')
    rows = await query(config["DATABASE_URL"], "SELECT session_id, body FROM webhooks")
    assert rows == [("ps_front", body)]
    assert metric(app, "action_required", "accepted") == 1
    assert metric(app, "action_required", "duplicate") == 1


async def test_a_body_in_pieces_is_read_whole(
    app: Any, dispatches: Dispatches, provider_key: rsa.RSAPrivateKey, config: dict[str, Any]
) -> None:
    body = json.dumps(webhook("action_required", "ps_pieces")).encode()
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    messages = [{"type": "http.request", "body": piece, "more_body": True} for piece in pieces]
    messages.append({"type": "http.request", "body": b"", "more_body": False})
    headers = signed(provider_key, body)[2:]  # no Content-Length: chunked
    answer = await post(app, dispatches, messages, headers=headers)
    assert (answer.status, answer.body, answer.by_quart) == (200, b'{"status": "accepted"}', False)
    rows = await query(config["DATABASE_URL"], "SELECT body FROM webhooks")
    assert rows == [(body,)]


@pytest.mark.parametrize("declared", [True, False])
async def test_a_body_over_the_limit_is_413_as_the_app_says_whether_declared_or_not(
    app: Any,
    dispatches: Dispatches,
    provider_key: rsa.RSAPrivateKey,
    config: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    declared: bool,
) -> None:
    most = app.extensions["bridge"].settings.webhook_max_bytes
    body = b" " * (most + 1)
    answers = []
    for by_quart in (True, False):
        headers = signed(provider_key, body)
        if not declared:
            headers = [headers[0], headers[2]]
        half = len(body) // 2
        messages = [
            {"type": "http.request", "body": body[:half], "more_body": True},
            {"type": "http.request", "body": body[half:], "more_body": False},
        ]
        with caplog.at_level(logging.WARNING):
            answers.append(
                await post(app, dispatches, messages, headers=headers, by_quart=by_quart)
            )
    by_app, by_front = answers
    assert by_app.status == 413
    assert_same(by_app, by_front)
    assert metric(app, "none", "body_too_large") == 2
    refused = [r.getMessage() for r in caplog.records if "webhook refused" in r.getMessage()]
    assert refused == ["webhook refused: the body is over the size limit"] * 2
    assert await query(config["DATABASE_URL"], "SELECT count(*) FROM webhooks") == [(0,)]


async def test_a_body_that_does_not_come_in_time_is_408_as_the_app_says(
    app: Any,
    dispatches: Dispatches,
    provider_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    front = app.asgi_app._inner  # Telemetry, around Front
    monkeypatch.setattr(front, "_body_timeout", 0.2)
    app.config["BODY_TIMEOUT"] = 0.2
    body = json.dumps(webhook("action_required")).encode()
    started = [{"type": "http.request", "body": body[:10], "more_body": True}]
    answers = []
    for by_quart in (True, False):
        headers = signed(provider_key, body)
        answers.append(await post(app, dispatches, started, headers=headers, by_quart=by_quart))
    by_app, by_front = answers
    assert by_app.status == 408
    assert_same(by_app, by_front)


async def test_a_client_that_hangs_up_before_its_body_gets_nothing_and_stores_nothing(
    app: Any, dispatches: Dispatches, provider_key: rsa.RSAPrivateKey, config: dict[str, Any]
) -> None:
    body = json.dumps(webhook("action_required")).encode()
    messages = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.disconnect"},
    ]
    answer = await post(app, dispatches, messages, headers=signed(provider_key, body))
    assert (answer.status, answer.by_quart) == (0, False)
    assert await query(config["DATABASE_URL"], "SELECT count(*) FROM webhooks") == [(0,)]


async def test_storage_trouble_is_tried_once_more_by_the_app_with_the_body_read(
    app: Any,
    dispatches: Dispatches,
    provider_key: rsa.RSAPrivateKey,
    config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = app.extensions["bridge"].store
    record = store.record_webhook
    failures = [StorageUnavailableError("the database is locked")]

    async def failing_once(*args: Any) -> Any:
        if failures:
            raise failures.pop()
        return await record(*args)

    monkeypatch.setattr(store, "record_webhook", failing_once)
    body = json.dumps(webhook("action_required", "ps_retried")).encode()
    answer = await post(app, dispatches, whole(body), headers=signed(provider_key, body))
    assert (answer.status, answer.body, answer.by_quart) == (200, b'{"status": "accepted"}', True)
    rows = await query(config["DATABASE_URL"], "SELECT session_id, body FROM webhooks")
    assert rows == [("ps_retried", body)]


async def test_storage_down_is_the_apps_503(
    app: Any,
    dispatches: Dispatches,
    provider_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = app.extensions["bridge"].store

    async def down(*args: Any) -> Any:
        raise StorageUnavailableError("the database is locked")

    monkeypatch.setattr(store, "record_webhook", down)
    body = json.dumps(webhook("action_required")).encode()
    answers = [
        await post(
            app, dispatches, whole(body), headers=signed(provider_key, body), by_quart=by_quart
        )
        for by_quart in (True, False)
    ]
    by_app, by_front = answers
    assert by_app.status == 503
    assert_same(by_app, by_front, tried_again=True)
