"""What a customer page's first read costs against a kept one: ``python -m bench.first_reads``.

Not part of ``bench/run``: no server, no HTTP, the app's ASGI callable called in this process
as a server calls it (``GET /pay/{token}``, the bench's request: no query, no language, not
framed), on a SQLite store of ``--sessions`` sessions each at its bank step, as the routes
part prepares them. Each session's page is read twice: the first read builds it, the second
is the kept page. Prints the CPU of this process (the writer thread's included) per read, the
loop's time per read (with several in flight, the inverse of the rate) and how long a read
waited for its answer (p50, p99), for first reads and for kept ones; ``--profile`` prints
where the first reads' time goes (cProfile, cumulative).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa

from app import create_app
from app.bridge import Bridge
from app.provider import meaning, parse_webhook
from tests.conftest import public_pem
from tests.payloads import webhook

SECRET = "bench-secret-key-0123456789"
Call = Callable[[str], Awaitable[int]]


def _caller(app: Any) -> Call:
    """``call(path)``: one GET through the app's ASGI callable; the answer's status code."""

    async def call(path: str) -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"wrk")],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "extensions": {},
        }
        status = 0
        given = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if given:  # nothing more until the client hangs up, as a server does
                await asyncio.get_running_loop().create_future()
            given = True
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app.asgi_app(scope, receive, send)
        return status

    return call


async def _sessions(the_bridge: Bridge, count: int) -> list[str]:
    """``count`` sessions at their bank step, stored as the webhook route stores them; their
    customers' tokens."""
    tokens = []
    for number in range(count):
        session_id = f"ps_first_{number:021d}"
        document = webhook("action_required", session_id)
        body = json.dumps(document).encode()
        await the_bridge.receive_webhook(
            body, parse_webhook(document, body), "signature", meaning(document)
        )
        tokens.append(the_bridge.tokens.mint(session_id).token)
    return tokens


class Reads(NamedTuple):
    cpu: float  # seconds of this process's CPU per read
    wall: float  # seconds of the loop's time per read (its inverse: reads a second)
    p50: float  # seconds from a read's request to its answer
    p99: float


async def _reads(call: Call, tokens: list[str], in_flight: int) -> Reads:
    """Every token's page read once, ``in_flight`` at a time."""
    queue = iter(tokens)
    took: list[float] = []

    async def reader() -> None:
        for token in queue:
            began = time.perf_counter()
            status = await call(f"/pay/{token}")
            took.append(time.perf_counter() - began)
            if status != 200:
                raise RuntimeError(f"a page answered {status}")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(reader() for _ in range(in_flight)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    took.sort()
    p50, p99 = took[len(took) // 2], took[min(len(took) - 1, len(took) * 99 // 100)]
    return Reads(cpu / len(tokens), wall / len(tokens), p50, p99)


async def _measure(options: argparse.Namespace, folder: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # nothing is verified
    app = create_app(
        {
            "DATABASE_URL": f"sqlite:///{folder}/bridge.sqlite3",
            "SECRET_KEY": SECRET,
            "SG_PUBLIC_KEY": public_pem(key),
        }
    )
    async with app.test_app():
        the_bridge: Bridge = app.extensions["bridge"]
        call = _caller(app)
        warm = await _sessions(the_bridge, 50)
        await _reads(call, warm, 1)  # templates compiled, connections warm
        tokens = await _sessions(the_bridge, options.sessions)
        profile = cProfile.Profile() if options.profile else None
        if profile is not None:
            profile.enable()
        first = await _reads(call, tokens, options.in_flight)
        if profile is not None:
            profile.disable()
        kept = await _reads(call, tokens, options.in_flight)
    print(f"{options.in_flight} in flight")
    print("| read | CPU us per read | wall us per read | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for name, reads in (("first", first), ("kept", kept)):
        print(
            f"| {name} | {reads.cpu * 1e6:,.0f} | {reads.wall * 1e6:,.0f} "
            f"| {reads.p50 * 1e3:.1f} | {reads.p99 * 1e3:.1f} |"
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(options.profile_lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000, help="sessions read, each twice")
    parser.add_argument("--in-flight", type=int, default=16, help="reads at a time")
    parser.add_argument("--profile", action="store_true", help="where first reads' time goes")
    parser.add_argument("--profile-lines", type=int, default=60)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_measure(options, folder))


if __name__ == "__main__":
    main()
