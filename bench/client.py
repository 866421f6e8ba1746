"""A small HTTP/1.1 client on asyncio protocols, for what wrk cannot do: preparing sessions
over keep-alive connections, and holding 10,000 long-polls open while timing their answers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any


def get(path: str, port: int, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, port: int, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Answer:
    status: int
    body: bytes
    first_byte: float  # time.perf_counter() when the answer began to arrive


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, await its answer, again."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.first_byte: float | None = None
        self.pending: asyncio.Future[Answer] | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        answer = Answer(
            int(head[0].split()[1]), bytes(self.buffer[end + 4 : end + 4 + length]), self.first_byte
        )
        del self.buffer[: end + 4 + length]
        self.first_byte = None
        if self.pending is not None and not self.pending.done():
            self.pending.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None and not self.pending.done():
            self.pending.set_exception(ConnectionError("the server closed the connection"))

    async def ask(self, request: bytes) -> Answer:
        assert self.transport is not None
        self.pending = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.pending

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> _Connection:
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_connection(_Connection, "127.0.0.1", port)
    return protocol


async def send_all(port: int, requests: list[bytes], connections: int = 16) -> list[Answer]:
    """Every request once, over ``connections`` keep-alive connections; answers in order."""
    answers: list[Answer | None] = [None] * len(requests)
    queue = list(enumerate(requests))
    queue.reverse()

    async def work() -> None:
        connection = await connect(port)
        try:
            while queue:
                number, request = queue.pop()
                answers[number] = await connection.ask(request)
        finally:
            connection.close()

    await asyncio.gather(*(work() for _ in range(connections)))
    return [answer for answer in answers if answer is not None]
