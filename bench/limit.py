"""The server's limit: a bare ASGI callable under ``redirect-bridge serve``'s own server
(app/server.py's protocol and settings, the same workers) that sends, for every request, the
exact bytes the bridge sent for one kept page and one status answer, captured from the bridge
under test. What the bridge's fast path makes against it is how close it comes to the most this
server can do with those answers.

    python -m bench.limit PORT WORKERS   # with BENCH_LIMIT_ANSWERS, a file of capture()
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import servers
from .common import Run

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Added by the server itself to every answer (uvicorn's default headers), so not captured.
SERVER_HEADERS = {"date", "server"}
# Made anew for every answer by the bridge: the limit sends the captured one, as many bytes.
PER_ANSWER_HEADERS = {"x-request-id"}
# The path prefixes answered, by the name of the bridge's route.
PREFIXES = {"kept": "/pay/", "status": "/api/v1/status/"}


@dataclass(frozen=True)
class Answer:
    """An answer as it went out: status, headers in order and as spelt, body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def shape(self) -> Answer:
        """The answer with each per-answer header's value blanked to its length."""
        headers = [
            (name, "x" * len(value) if name.lower() in PER_ANSWER_HEADERS else value)
            for name, value in self.headers
        ]
        return Answer(self.status, headers, self.body)

    def to_json(self) -> dict[str, Any]:
        body = base64.b64encode(self.body).decode()
        return {"status": self.status, "headers": self.headers, "body": body}

    @classmethod
    def from_json(cls, found: dict[str, Any]) -> Answer:
        headers = [(name, value) for name, value in found["headers"]]
        return cls(found["status"], headers, base64.b64decode(found["body"]))


def capture(url: str, path: str) -> Answer:
    """One GET of ``path`` at ``url`` (loopback only), as the server sent it."""
    host, port = url.removeprefix("http://").split(":")
    if host != "127.0.0.1":
        raise ValueError(f"bench only talks to 127.0.0.1, not {url}")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        headers = [(n, v) for n, v in answer.getheaders() if n.lower() not in SERVER_HEADERS]
        return Answer(answer.status, headers, answer.read())
    finally:
        connection.close()


def server(run: Run, answers: dict[str, Answer]) -> servers.Server:
    """The limit's server, sending ``answers`` (by route name), not started."""
    stored = run.folder / "limit-answers.json"
    stored.write_text(json.dumps({route: answer.to_json() for route, answer in answers.items()}))
    return servers.limit(run, stored)


def check(limit: servers.Server, bridge_url: str, paths: dict[str, str]) -> None:
    """Raise unless the limit answers each route's path as the bridge does, bytes for bytes
    but the per-answer headers' values."""
    for route, path in paths.items():
        sent, replayed = capture(bridge_url, path).shape(), capture(limit.url, path).shape()
        if sent != replayed:
            names = {name for name, _ in set(sent.headers) ^ set(replayed.headers)}
            raise RuntimeError(
                f"the limit's {route} answer differs from the bridge's: status"
                f" {replayed.status} for {sent.status}, headers {sorted(names)}, body"
                f" {len(replayed.body)} bytes for {len(sent.body)}"
                + (" (same length)" if len(sent.body) == len(replayed.body) else "")
            )


def _answers() -> dict[str, tuple[Message, Message]]:
    """What ``app`` sends for each path prefix, as ASGI messages built once."""
    found = json.loads(Path(os.environ["BENCH_LIMIT_ANSWERS"]).read_text())
    messages: dict[str, tuple[Message, Message]] = {}
    for route, prefix in PREFIXES.items():
        answer = Answer.from_json(found[route])
        headers = [tuple(part.encode("latin-1") for part in pair) for pair in answer.headers]
        start: Message = {"type": "http.response.start", "status": answer.status}
        start["headers"] = headers
        messages[prefix] = (start, {"type": "http.response.body", "body": answer.body})
    return messages


_ANSWERS = _answers() if "BENCH_LIMIT_ANSWERS" in os.environ else {}
_HEALTHY: tuple[Message, Message] = (
    {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]},
    {"type": "http.response.body", "body": b"ok"},
)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The bare ASGI callable: the captured answer of the route the path names."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    start, body = _HEALTHY
    for prefix, answer in _ANSWERS.items():
        if path.startswith(prefix):
            start, body = answer
            break
    await send(start)
    await send(body)


def _nothing_held() -> None:
    """Nothing to answer when a worker stops: the callable holds no request."""


if __name__ == "__main__":
    import uvicorn

    from app import server as bridge_server

    port, workers = int(sys.argv[1]), int(sys.argv[2])
    fitting = bridge_server.fit_open_files(bridge_server.MAX_CONNECTIONS)
    uvicorn.run(
        "bench.limit:app",
        host="127.0.0.1",
        port=port,
        workers=workers,
        **bridge_server.options(fitting, on_shutdown=_nothing_held),
    )
