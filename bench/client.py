"""A small HTTP/1.1 client on asyncio protocols, for what wrk cannot do: sending each of a list
of requests once, holding 10,000 long-polls open while timing their answers, and the soak's
requests at their own times (a pool of keep-alive connections, event streams)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast


def request(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def webhooks(signed: Path, port: int) -> dict[str, bytes]:
    """The webhooks of a file of common.sign_webhooks as requests, by session id."""
    found = {}
    for line in signed.read_text().splitlines():
        signature, body = line.split("\t", 1)
        headers = {"Content-Type": "application/json", "X-PARTNER-SIGN": signature}
        found[json.loads(body)["session"]["id"]] = request(
            "POST", "/webhooks/smart-glocal", port, headers, body.encode()
        )
    return found


@dataclass
class Answer:
    status: int
    body: bytes
    first_byte: float  # time.perf_counter() when the answer began to arrive
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


class Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, await its answer, again."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.first_byte = 0.0
        self.pending: asyncio.Future[Answer] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        if not self.buffer:
            self.first_byte = time.perf_counter()
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = dict(_header(line) for line in lines[1:])
        length = int(headers.get("content-length", 0))
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        if self.pending is not None and not self.pending.done():
            status = int(lines[0].split()[1])
            self.pending.set_result(Answer(status, body, self.first_byte, headers))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.set_exception(ConnectionError("the server closed the connection"))

    async def ask(self, request: bytes) -> Answer:
        if self.transport.is_closing():
            raise ConnectionError("the server closed the connection")
        self.pending = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.pending


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


async def connect(port: int) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(
        Connection, "127.0.0.1", port
    )
    return connection


async def send_all(port: int, requests: list[bytes], connections: int = 16) -> list[Answer]:
    """Every request once, over ``connections`` keep-alive connections; answers in order."""
    answers: dict[int, Answer] = {}
    queue = list(enumerate(requests))[::-1]

    async def work() -> None:
        connection = await connect(port)
        while queue:
            number, request = queue.pop()
            try:
                answers[number] = await connection.ask(request)
            except ConnectionError:  # closed by the server (Hypercorn does): on a new one
                connection = await connect(port)
                answers[number] = await connection.ask(request)
        connection.transport.close()

    await asyncio.gather(*(work() for _ in range(connections)))
    return [answers[number] for number in sorted(answers)]


class Pool:
    """Keep-alive connections to one port, each carrying one request at a time, opened as
    requests need them; one the server closed (idle too long) is left for a new one."""

    def __init__(self, port: int) -> None:
        self.port, self.idle = port, list[Connection]()

    async def ask(self, request: bytes) -> Answer:
        for attempt in range(2):  # a connection the server closed as the request left: again
            connection = self._idle() or await connect(self.port)
            try:
                answer = await connection.ask(request)
            except ConnectionError:
                if attempt:
                    raise
                continue
            except BaseException:  # given up on (a timeout): its answer may still come
                connection.transport.close()
                raise
            self.idle.append(connection)
            return answer
        raise AssertionError("unreachable")

    def _idle(self) -> Connection | None:
        while self.idle:
            if not (connection := self.idle.pop()).transport.is_closing():
                return connection
        return None

    def close(self) -> None:
        for connection in self.idle:
            connection.transport.close()
        self.idle.clear()


class Stream(asyncio.Protocol):
    """One request whose answer is read as it comes (Server-Sent Events) until ``until``
    matches what arrived, or the server ends it."""

    def __init__(self, until: re.Pattern[bytes]) -> None:
        self.until, self.received = until, bytearray()
        self.ended: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += data
        if not self.ended.done() and self.until.search(self.received):
            self.ended.set_result(bytes(self.received))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(bytes(self.received))


async def stream(port: int, request: bytes, until: re.Pattern[bytes]) -> bytes:
    """Send ``request`` on a connection of its own; what came until ``until`` matched or the
    server ended the answer (its head included)."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(lambda: Stream(until), "127.0.0.1", port)
    protocol.transport.write(request)
    try:
        return await protocol.ended
    finally:
        protocol.transport.close()
