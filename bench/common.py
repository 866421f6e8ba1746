"""What every part shares: the settings, one run's state (secrets, databases, notes), signed
webhooks and plain HTTP on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign
from tests.payloads import webhook
from tests.postgres import PostgresServer

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results"  # ignored by git
PEM = serialization.Encoding.PEM


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_async(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` under uvloop; a SIGTERM meanwhile cancels it (so its servers are
    stopped as it unwinds) and ends the run with 143. (bench/__main__.py's own handler, set
    with ``signal.signal``, runs only between the loop's callbacks: on a loop waiting for a
    timer, not until that fires.)"""
    stopped = False

    async def stoppable() -> T:
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        assert task is not None

        def stop() -> None:
            nonlocal stopped
            stopped = True
            task.cancel()

        loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            return await coroutine
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        return uvloop.run(stoppable())
    except asyncio.CancelledError:
        if stopped:
            sys.exit(143)
        raise


@dataclass(frozen=True)
class Settings:
    """The command line's options (bench/__main__.py)."""

    only: tuple[str, ...]
    duration: float
    warmup: float
    rounds: int
    attempts: int
    quiet_wait: float
    workers: int
    engine: str
    profile: bool
    scale_engines: tuple[str, ...]
    sessions: int
    waiters: int
    soak_minutes: float
    soak_window: float
    soak_rate: float
    soak_trace: bool


@dataclass(frozen=True)
class Credentials:
    """A run's secrets: made fresh each time, never written anywhere lasting."""

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    api_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def private_pem(self) -> bytes:
        private = serialization.PrivateFormat.PKCS8
        return self.key.private_bytes(PEM, private, serialization.NoEncryption())

    def signed(self, body: bytes) -> str:
        """The ``X-PARTNER-SIGN`` the provider would send with ``body``."""
        return sign(self.key, body)

    def public_pem(self) -> str:
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        return self.key.public_key().public_bytes(PEM, public).decode()


def webhook_body(session_id: str, kind: str = "action_required", **extra: Any) -> bytes:
    """A webhook as Smart Glocal sends it (the suite's own payloads), dated now by the
    provider's clock: the bridge ignores one older than its retention period."""
    extra.setdefault("updated_at", time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()))
    return json.dumps(webhook(kind, session_id, **extra), separators=(", ", ": ")).encode()


def _sign_chunk(private_pem: bytes, ids: list[str]) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return "".join(f"{sign(key, body)}\t{body.decode()}\n" for body in map(webhook_body, ids))


def sign_webhooks(credentials: Credentials, ids: list[str], path: Path) -> Path:
    """A signed ``action_required`` for each session of ``ids``, one ``signature<TAB>body`` a
    line (what bench/lua/bodies.lua sends), signed on every core."""
    chunks = [ids[start : start + 500] for start in range(0, len(ids), 500)]
    with ProcessPoolExecutor(os.cpu_count()) as pool, path.open("w") as out:
        out.writelines(pool.map(_sign_chunk, [credentials.private_pem()] * len(chunks), chunks))
    return path


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"bench only talks to 127.0.0.1, not {url}")
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, bytes(error.read())


@dataclass
class Run:
    """One run: its settings, what it measured, and what it started that must be stopped."""

    settings: Settings
    folder: Path  # temporary: databases, path and body files, servers' logs
    credentials: Credentials = field(default_factory=Credentials)
    roots: list[int] = field(default_factory=list)  # our processes that are not our children
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    postgres: PostgresServer | None = None

    def note(self, message: str) -> None:
        say(f"note: {message}")
        self.notes.append(message)

    def database_url(self, engine: str | None = None) -> str:
        """A fresh, empty database on ``engine`` (default: the run's)."""
        if (engine or self.settings.engine) == "sqlite":
            return f"sqlite:///{self.folder}/bridge-{uuid.uuid4().hex[:8]}.sqlite3"
        if self.postgres is None:
            say("starting a private PostgreSQL server (as the tests start one)")
            self.postgres = PostgresServer()
            self.postgres.start()
            postmaster = self.postgres.folder / "data" / "postmaster.pid"
            self.roots.append(int(postmaster.read_text().split()[0]))  # it daemonises
        return self.postgres.new_database()


@contextlib.contextmanager
def started(settings: Settings) -> Iterator[Run]:
    """A run; at its end PostgreSQL is stopped and the servers' logs go to bench/results/logs."""
    run = Run(settings, Path(tempfile.mkdtemp(prefix="bridge-bench-")))
    try:
        yield run
    finally:
        if run.postgres is not None:
            run.postgres.stop()
        logs = RESULTS / "logs"
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True)
        for log in run.folder.glob("*.log"):
            shutil.copy(log, logs / log.name)
        shutil.rmtree(run.folder, ignore_errors=True)
