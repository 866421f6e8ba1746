"""A partner's backend that costs next to nothing: every request answered 200 at once, on
loopback, keep-alive, one process with uvloop; ``GET /count`` answers how many POSTs came.
Given a file, it also writes a line for every POST: its ``webhook-id`` and the SHA-256 of its
body (the soak checks from them that every delivery came, once); ``GET /count`` flushes it.

    python -m bench.partner PORT [LOG]
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from typing import IO, cast

import uvloop


class Answering(asyncio.Protocol):
    """HTTP/1.1 requests with a Content-Length (the relay sends bytes that way), pipelined or not;
    ``received`` (shared by the connections) counts the POSTs."""

    def __init__(self, received: list[int], log: IO[str] | None) -> None:
        self.received, self.log, self.buffer = received, log, bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).decode("latin-1").lower().split("\r\n")
            length = sum(int(h.split(":")[1]) for h in head if h.startswith("content-length:"))
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            if self.log is not None and head[0].startswith("post "):
                body = bytes(self.buffer[end + 4 : end + 4 + length])
                self.log.write(
                    f"{_message_id(self.buffer[:end])}\t{hashlib.sha256(body).hexdigest()}\n"
                )
            if self.log is not None and head[0].startswith("get /count "):
                self.log.flush()
            del self.buffer[: end + 4 + length]
            self.received[0] += head[0].startswith("post ")
            body = str(self.received[0]).encode() if head[0].startswith("get /count ") else b""
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


def _message_id(head: bytearray) -> str:
    """The ``webhook-id`` header's value, as sent (its case kept)."""
    for line in bytes(head).decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "webhook-id":
            return value.strip()
    return ""


async def serve(port: int, log: IO[str] | None) -> None:
    loop, received, stopped = asyncio.get_running_loop(), [0], asyncio.Event()

    def answering() -> Answering:
        return Answering(received, log)

    server = await loop.create_server(answering, "127.0.0.1", port, backlog=1024)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


if __name__ == "__main__":
    log = open(sys.argv[2], "a") if len(sys.argv) > 2 else None
    uvloop.run(serve(int(sys.argv[1]), log))
