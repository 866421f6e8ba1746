"""A partner's backend that costs next to nothing: every request answered 200 at once, on
loopback, keep-alive, one process with uvloop; ``GET /count`` answers how many POSTs came.

    python -m bench.partner PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import cast

import uvloop


class Answering(asyncio.Protocol):
    """HTTP/1.1 requests with a Content-Length (the relay sends bytes that way), pipelined or not;
    ``received`` (shared by the connections) counts the POSTs."""

    def __init__(self, received: list[int]) -> None:
        self.received, self.buffer = received, bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).decode("latin-1").lower().split("\r\n")
            length = sum(int(h.split(":")[1]) for h in head if h.startswith("content-length:"))
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            del self.buffer[: end + 4 + length]
            self.received[0] += head[0].startswith("post ")
            body = str(self.received[0]).encode() if head[0].startswith("get /count ") else b""
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )


async def serve(port: int) -> None:
    loop, received, stopped = asyncio.get_running_loop(), [0], asyncio.Event()
    server = await loop.create_server(lambda: Answering(received), "127.0.0.1", port, backlog=1024)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
