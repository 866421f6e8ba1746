"""What every part of a benchmark run shares: settings, secrets, databases, logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import load, servers, wrk
from .data import Credentials


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Context:
    duration: float
    warmup: float
    workers: int | None  # None: `serve` has no --workers, so it runs one process
    engine: str
    folder: Path
    credentials: Credentials = field(default_factory=Credentials.fresh)
    connections: int = wrk.CONNECTIONS
    profile: Path | None = None  # where py-spy profiles go, when asked for
    rounds: int = 1  # each measurement this many times, interleaved; the median is kept
    attempts: int = 3  # measurements disturbed by other processes are repeated up to this
    quiet_wait: float = 120.0  # seconds to wait for other processes to calm down first
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _postgres: Any = None

    @property
    def worker_count(self) -> int:
        return self.workers or 1

    def note(self, message: str) -> None:
        say(f"note: {message}")
        self.notes.append(message)

    def database_url(self, engine: str | None = None) -> str:
        """A fresh, empty database on ``engine`` (default: the run's engine)."""
        engine = engine or self.engine
        if engine == "sqlite":
            return f"sqlite:///{self.folder}/bridge-{uuid.uuid4().hex[:8]}.sqlite3"
        return self.postgres().new_database()

    def postgres(self) -> Any:
        """A private PostgreSQL server (as the tests start one), started on first use."""
        if self._postgres is None:
            from tests.postgres import PostgresServer

            say("starting a private PostgreSQL server")
            server = PostgresServer()
            server.start()
            self._postgres = server
            postmaster = Path(server.folder) / "data" / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError):
                load.extra_roots.append(int(postmaster.read_text().split()[0]))
        return self._postgres

    def bridge_env(self, database_url: str) -> dict[str, str]:
        return servers.bridge_env(
            secret=self.credentials.secret,
            public_key_pem=self.credentials.public_pem,
            api_key=self.credentials.api_key,
            database_url=database_url,
            port=0,
        )

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None


@contextlib.contextmanager
def context(logs: Path, **settings: Any) -> Any:
    """A run's context; the servers' logs are kept in ``logs`` (the last run's only)."""
    folder = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    ctx = Context(folder=folder, **settings)
    try:
        yield ctx
    finally:
        ctx.close()
        shutil.rmtree(logs, ignore_errors=True)
        logs.mkdir(parents=True, exist_ok=True)
        for log in folder.glob("*.log"):
            shutil.copy(log, logs / log.name)
        shutil.rmtree(folder, ignore_errors=True)


def run_async(coroutine: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(coroutine)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
