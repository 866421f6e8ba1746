"""A partner's backend that costs next to nothing: every request answered 200 at once, on
loopback, keep-alive, one process with uvloop. ``GET /count`` answers how many POSTs came.

    python -m bench.partner --port 8123
"""

from __future__ import annotations

import argparse
import asyncio
import signal

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
received = 0


class Answering(asyncio.Protocol):
    """HTTP/1.1 requests with a Content-Length (httpx sends bytes that way), pipelined or not."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.WriteTransport = transport  # type: ignore[assignment]
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        global received
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buffer[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return  # the body is still on its way
            del self.buffer[: end + 4 + length]
            if head.startswith("GET /count "):
                count = str(received).encode()
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(count), count)
                )
            else:
                received += head.startswith("POST ")
                self.transport.write(OK)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Answering, "127.0.0.1", port, backlog=1024)
    stopped = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopped.set)
    async with server:
        await stopped.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.partner")
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    try:
        import uvloop

        uvloop.run(serve(port))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(serve(port))


if __name__ == "__main__":
    main()
