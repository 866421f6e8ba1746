"""Webhooks per second through `redirect-bridge serve`: signature check plus a durable write.

Starts the real server (uvicorn, one worker) on loopback with a fresh SQLite database, sends
unique signed `action_required` webhooks over keep-alive connections, and prints throughput and
latency percentiles. A measurement, not a test.

    .venv/bin/python bench/webhooks.py [--requests 4000] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.signature import sign  # noqa: E402
from tests.payloads import webhook  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requests(count: int, key: rsa.RSAPrivateKey, port: int) -> list[bytes]:
    prepared = []
    for number in range(count):
        body = json.dumps(webhook("action_required", f"ps_bench_{number}")).encode()
        head = (
            f"POST /webhooks/smart-glocal HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"X-PARTNER-SIGN: {sign(key, body)}\r\n\r\n"
        )
        prepared.append(head.encode() + body)
    return prepared


async def worker(port: int, queue: list[bytes], latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while queue:
        request = queue.pop()
        started = time.perf_counter()
        writer.write(request)
        status = await reader.readline()
        length = 0
        while (line := await reader.readline()) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        if b" 200 " not in status:
            raise RuntimeError(status.decode())
    writer.close()
    await writer.wait_closed()


async def wait_ready(port: int) -> None:
    for _ in range(100):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise RuntimeError("the server did not start")


async def main(count: int, connections: int) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        env = {
            **os.environ,
            "BRIDGE_SECRET_KEY": "bench-secret-0123456789",
            "BRIDGE_SG_PUBLIC_KEY": pem,
            "BRIDGE_DATABASE_URL": f"sqlite:///{directory}/bench.sqlite3",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_ready(port)
            queue = requests(count, key, port)
            latencies: list[float] = []
            started = time.perf_counter()
            await asyncio.gather(*(worker(port, queue, latencies) for _ in range(connections)))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait()
    latencies.sort()
    print(f"webhooks:     {count} unique, signed, {connections} connections")
    print(f"throughput:   {count / elapsed:,.0f} webhooks/s")
    print(f"latency p50:  {statistics.median(latencies) * 1000:.1f} ms")
    print(f"latency p99:  {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=32)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.connections))
