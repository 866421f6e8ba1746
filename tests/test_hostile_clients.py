"""Clients that send without end, slowly or not at all, against a real ``redirect-bridge serve``:
none of them stalls a worker, each is cut off with a clear answer, and a normal client keeps its
latency while the attack runs.

Every attack here goes to 127.0.0.1 only, is bounded in connections, bytes and seconds, and
stops by itself. What the review found before the server was bounded: an endless header froze
the worker for seconds (a normal client's requests timed out after 5 s) and grew it by hundreds
of MB; half-sent requests were never timed out, and enough of them (here 1,500 against a worker
with the default soft limit of 1,024 open files) locked every other client out. Each test here
failed then; README's "Running it" gives the figures before and after.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import resource
import secrets
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign
from app.tokens import Tokens

from .conftest import public_pem
from .payloads import webhook
from .servers import Served, environment

# What serve promises (README, "Running it"): a request's head of at most 32 KB, complete
# within 5 s of the connection being ready for it; a body within 10 s; 503 beyond the
# connections a worker takes.
HEAD_MAX_BYTES = 32 * 1024
HEAD_TIMEOUT = 5.0
BODY_TIMEOUT = 10.0
SLACK = 3.0  # seconds on top of each, for a loaded two-core machine
LINGER = 2.0  # seconds the server reads and drops what comes after an answer that ends it

# A normal client during an attack: every answer 200, the 95th percentile under this.
P95_LIMIT = 1.0


@dataclass
class Probe:
    """A normal client in a thread of its own: ``GET /healthz`` on a fresh connection every
    50 ms until stopped, each with a 5 s timeout."""

    port: int
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        print("a normal client meanwhile:", self.summary())

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                try:
                    connection.request("GET", "/healthz")
                    answer = connection.getresponse()
                    answer.read()
                finally:
                    connection.close()
                if answer.status != 200:
                    self.failures.append(f"status {answer.status}")
            except OSError as error:
                self.failures.append(repr(error))
            self.latencies.append(time.monotonic() - started)
            self._stop.wait(0.05)

    @property
    def p95(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.95)]

    def summary(self) -> str:
        ordered = sorted(self.latencies)
        if not ordered:
            return "no requests"
        return (
            f"{len(ordered)} requests, p50 {ordered[len(ordered) // 2] * 1000:.1f} ms,"
            f" p95 {self.p95 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms,"
            f" {len(self.failures)} failed {self.failures[:3]}"
        )

    def check(self) -> None:
        assert len(self.latencies) >= 10, self.summary()
        assert not self.failures, self.summary()
        assert self.p95 < P95_LIMIT, self.summary()


@dataclass
class Outcome:
    """What one slow connection got: the server's bytes, and when (seconds after it opened)
    they began and the server closed."""

    answer: bytes = b""
    answered: float | None = None
    closed: float | None = None

    def __str__(self) -> str:
        answered = "-" if self.answered is None else f"{self.answered:.1f} s"
        closed = "never" if self.closed is None else f"{self.closed:.1f} s"
        return f"answered {self.status} after {answered}, closed after {closed}"

    @property
    def status(self) -> int | None:
        parts = self.answer.split(b" ", 2)
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


async def slow_sender(
    port: int,
    first: bytes,
    drip: bytes,
    until: float,
    every: float = 1.0,
    gate: asyncio.Semaphore | None = None,
) -> Outcome:
    """Send ``first``, then ``drip`` every ``every`` seconds until the server closes the
    connection or the clock reaches ``until``; connect while holding ``gate``."""
    outcome = Outcome()
    async with gate or asyncio.Semaphore():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened = time.monotonic()

    async def read() -> None:
        try:
            while chunk := await reader.read(4096):
                if outcome.answered is None:
                    outcome.answered = time.monotonic() - opened
                outcome.answer += chunk
        except OSError:
            pass
        outcome.closed = time.monotonic() - opened

    reading = asyncio.create_task(read())
    try:
        writer.write(first)
        while not reading.done() and time.monotonic() < until:
            await asyncio.wait({reading}, timeout=min(every, max(until - time.monotonic(), 0)))
            if not reading.done() and not writer.is_closing():
                writer.write(drip)
    finally:
        reading.cancel()
        writer.close()
    return outcome


async def crowd(port: int, senders: list[tuple[bytes, bytes]], until: float) -> list[Outcome]:
    """One slow connection for each ``(first, drip)``, opened 100 at a time."""
    gate = asyncio.Semaphore(100)  # the listen backlog is finite
    return await asyncio.gather(
        *(slow_sender(port, first, drip, until, gate=gate) for first, drip in senders)
    )


def peak_rss_mb(served: Served) -> float:
    """The worker's peak resident memory (``--workers 1``: the server process is the worker)."""
    assert served.process is not None
    for line in Path(f"/proc/{served.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def serve_command(folder: Path, *options: str, open_files: int | None = None) -> Path:
    """A ``redirect-bridge`` that runs with ``options`` added, and with the soft limit on open
    files lowered to ``open_files`` as Debian's and systemd's default (1,024) would."""
    found = shutil.which("redirect-bridge", path=str(Path(sys.executable).parent))
    command = [found] if found else [sys.executable, "-m", "app"]
    script = folder / "redirect-bridge"
    lines = ["#!/bin/sh"]
    if open_files is not None:
        lines.append(f"ulimit -Sn {open_files}")
    lines.append(f'exec {shlex.join(command)} "$@" {shlex.join(options)}')
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    return script


@pytest.fixture(scope="module", autouse=True)
def open_files() -> Iterator[None]:
    """This process opens 1,500 connections at once: room for them, as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory, provider_key: rsa.RSAPrivateKey
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("hostile")
    return environment(
        DATABASE_URL=f"sqlite:///{folder}/bridge.sqlite3",
        SECRET_KEY=secrets.token_urlsafe(32),
        SG_PUBLIC_KEY=public_pem(provider_key),
    )


@pytest.fixture(scope="module")
def bridge(settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``serve --workers 1``: the server's process is the worker."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    served = Served(settings, workers=1, log=log).start()
    yield served
    served.stop()


HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


async def endless(port: int, start: bytes) -> tuple[int, float, bytes, bool]:
    """Send ``start`` and then 64 KB after 64 KB (at most 64 MB, for at most 10 s) until the
    server answers or ends the connection: bytes written, seconds, answer, whether it ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(start)
    answer = asyncio.create_task(reader.read())
    chunk, sent = b"a" * 65536, 0
    try:
        while not answer.done() and sent < 64 << 20 and time.monotonic() - started < 10:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
            await asyncio.sleep(0)  # reads as it writes, as a client that wants the answer
    except OSError:
        pass  # the server ended the connection under us
    try:
        said, ended = await asyncio.wait_for(answer, timeout=LINGER), True
    except TimeoutError:
        said, ended = b"", False
    except OSError:
        said, ended = b"", True
    took = time.monotonic() - started
    writer.close()
    return sent, took, said, ended


@pytest.mark.parametrize(
    "start",
    [
        pytest.param(HEAD + b"X-Endless: ", id="header"),
        pytest.param(b"GET /healthz?q=", id="request-line"),
        pytest.param(
            b"POST /webhooks/smart-glocal HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n0\r\nX-Trailer: ",
            id="trailer",
        ),
    ],
)
async def test_an_endless_head_is_cut_off_at_once(
    settings: dict[str, str], tmp_path: Path, start: bytes
) -> None:
    """One connection sends a head (or a chunked body's trailer, which the parser gathers the
    same way) that never ends: 431, or for the trailer, whose request is being answered, the
    connection simply ends. A worker of its own, so that its peak memory is this attack's."""
    served = Served(settings, workers=1, log=tmp_path / "serve.log").start()
    try:
        rss_before = peak_rss_mb(served)
        with Probe(served.port) as probe:
            await asyncio.sleep(0.5)
            sent, took, said, ended = await endless(served.port, start)
            await asyncio.sleep(0.5)
        grown = peak_rss_mb(served) - rss_before
    finally:
        served.stop()
    print(f"{sent / 2**20:.1f} MB written in {took:.2f} s; answer {said[:40]!r}, ended {ended}")
    print(f"the worker's peak RSS grew {grown:.1f} MB")
    assert ended and took < 2, (took, said[:100])
    if b"X-Trailer" not in start:
        assert said.startswith(b"HTTP/1.1 431 "), said[:100]
    assert grown < 16, grown
    probe.check()


async def test_a_chunked_body_in_one_byte_chunks_is_served(
    bridge: Served, provider_key: rsa.RSAPrivateKey
) -> None:
    """No false alarm on a chunked body's framing: a webhook in chunks of one byte each."""
    body = json.dumps(webhook("action_required", "ps_hostile_chunks")).encode()
    chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
    writer.write(
        b"POST /webhooks/smart-glocal HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        + f"X-PARTNER-SIGN: {sign(provider_key, body)}\r\n\r\n".encode()
        + chunks
        + b"0\r\n\r\n"
    )
    said = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert said.startswith(b"HTTP/1.1 200 "), said[:300]


async def test_a_large_head_under_the_bound_is_served(bridge: Served) -> None:
    """No false alarm: a head of 24 KB (big cookies, say) is answered as usual."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
    cookie = b"Cookie: " + b"c" * (HEAD_MAX_BYTES * 3 // 4) + b"\r\n"
    writer.write(HEAD + cookie + b"Connection: close\r\n\r\n")
    said = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    assert said.startswith(b"HTTP/1.1 200 "), said[:100]


async def test_a_head_must_arrive_in_time(bridge: Served) -> None:
    """A head sent a line a second, on a new connection and on a keep-alive one after its
    first answer; a connection that sends nothing; a body sent a byte a second to a route that
    answers without it. Each is cut off; none may outlive 15 s."""
    until = time.monotonic() + HEAD_TIMEOUT + BODY_TIMEOUT
    keep_alive = HEAD + b"\r\n" + HEAD  # the first answered, the second never finished
    unread_body = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n"
    trickled, silent, kept_alive, unread = await asyncio.gather(
        slow_sender(bridge.port, HEAD, b"X-Slow: 1\r\n", until),
        slow_sender(bridge.port, b"", b"", until),
        slow_sender(bridge.port, keep_alive, b"X-Slow: 1\r\n", until),
        slow_sender(bridge.port, unread_body, b"x", until),
    )
    print(f"head a line a second: {trickled}")
    print(f"nothing sent: {silent}")
    print(f"keep-alive, then a head a line a second: {kept_alive}")
    print(f"body a byte a second, not read: {unread}")

    assert trickled.status == 408 and trickled.closed is not None, trickled
    assert HEAD_TIMEOUT - 0.5 < trickled.closed < HEAD_TIMEOUT + SLACK, trickled

    assert silent.answer == b"" and silent.closed is not None, silent
    assert silent.closed < HEAD_TIMEOUT + SLACK, silent

    first, _, second = kept_alive.answer.partition(b"HTTP/1.1 408 ")
    assert first.startswith(b"HTTP/1.1 200 ") and second, kept_alive.answer
    assert kept_alive.closed is not None and kept_alive.closed < HEAD_TIMEOUT + SLACK, kept_alive

    assert unread.status == 200 and unread.closed is not None, unread
    assert unread.closed < 1, unread  # closed with its answer, not kept open by the drip


async def test_half_sent_requests_are_cut_off_and_lock_nobody_out(
    settings: dict[str, str], tmp_path: Path
) -> None:
    """1,500 connections against one worker started with the default soft limit of 1,024 open
    files: half of them send a head a line a second, half a webhook's body a byte a second.
    Every one is cut off with 408 and a normal client is served throughout (at most 25 s)."""
    script = serve_command(tmp_path, open_files=1024)
    served = Served(settings, workers=1, log=tmp_path / "serve.log", script=script).start()
    body_head = (
        b"POST /webhooks/smart-glocal HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    senders = [(HEAD, b"X-Slow: 1\r\n")] * 750 + [(body_head, b" ")] * 750
    try:
        with Probe(served.port) as probe:
            await asyncio.sleep(0.5)
            started = time.monotonic()
            outcomes = await crowd(served.port, senders, until=started + 25)
            took = time.monotonic() - started
            await asyncio.sleep(0.5)
    finally:
        served.stop()
    heads, bodies = outcomes[:750], outcomes[750:]
    for name, group in (("heads", heads), ("bodies", bodies)):
        statuses = sorted({str(outcome.status) for outcome in group})
        closed = [outcome.closed for outcome in group if outcome.closed is not None]
        latest = f"{max(closed):.1f}" if closed else "-"
        print(
            f"slow {name}: {len(closed)} of {len(group)} cut off, answers {statuses},"
            f" the last after {latest} s"
        )
    print(f"the attack took {took:.1f} s")
    assert all(outcome.status == 408 for outcome in heads), heads[:3]
    assert all(o.closed is not None and o.closed < HEAD_TIMEOUT + SLACK for o in heads)
    assert all(outcome.status == 408 for outcome in bodies), bodies[:3]
    assert all(o.closed is not None and o.closed < BODY_TIMEOUT + SLACK for o in bodies)
    probe.check()


async def test_connections_beyond_the_bound_are_answered_503(
    settings: dict[str, str], tmp_path: Path
) -> None:
    """``--max-connections 50``: with 50 connections open, one more request is answered 503
    and closed; once some of them go, requests are served again."""
    script = serve_command(tmp_path, "--max-connections", "50")
    served = Served(settings, workers=1, log=tmp_path / "serve.log", script=script).start()
    try:
        held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(50)]
        await asyncio.sleep(0.2)  # all accepted

        async def ask(last: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            writer.write(HEAD + last + b"\r\n")
            try:
                return await asyncio.wait_for(reader.read(), timeout=5)  # until closed
            except TimeoutError:
                return b"left open"
            finally:
                writer.close()

        beyond = await ask(b"")  # keep-alive asked: the 503 closes all the same
        for _, writer in held[:10]:
            writer.close()
        await asyncio.sleep(0.2)
        within = await ask(b"Connection: close\r\n")
        for _, writer in held[10:]:
            writer.close()
    finally:
        served.stop()
    print(f"beyond the bound: {beyond[:80]!r}")
    assert beyond.startswith(b"HTTP/1.1 503 "), beyond
    assert b"\r\nconnection: close\r\n" in beyond.lower(), beyond
    assert within.startswith(b"HTTP/1.1 200 "), within


async def test_long_polls_whose_clients_hang_up_are_let_go_at_once(
    settings: dict[str, str], tmp_path: Path
) -> None:
    """A held long-poll ends with its connection: 120 hung-up polls (each asked to wait 30 s)
    leave nothing held, so neither the worker's 50 connections nor its memory fill up."""
    script = serve_command(tmp_path, "--max-connections", "50")
    served = Served(settings, workers=1, log=tmp_path / "serve.log", script=script).start()
    token = Tokens([settings["BRIDGE_SECRET_KEY"]], 3600, time.time).mint("ps_gone").token
    poll = (
        f"GET /api/v1/status/{token}?wait=30 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "If-None-Match: *\r\n\r\n"
    ).encode()
    try:
        for _ in range(3):
            held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(40)]
            for _, writer in held:
                writer.write(poll)
            await asyncio.sleep(0.5)  # all held by now
            for _, writer in held:
                writer.close()
            await asyncio.sleep(0.5)
        client = http.client.HTTPConnection("127.0.0.1", served.port, timeout=5)
        try:
            client.request("GET", "/metrics")
            answer = client.getresponse()
            metrics = answer.read().decode()
        finally:
            client.close()
    finally:
        served.stop()
    assert answer.status == 200
    assert "\nbridge_long_poll_waiters 0.0\n" in metrics, [
        line for line in metrics.splitlines() if "waiters" in line
    ]
