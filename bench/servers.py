"""The servers under test, each a real process group on 127.0.0.1: the bridge under
``redirect-bridge serve`` (uvicorn) or Hypercorn, the bare twin under uvicorn, and the partner."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .common import Run

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class Server:
    def __init__(
        self, run: Run, name: str, command: list[str], env: dict[str, str], port: str
    ) -> None:
        self.name, self.command, self.env, self.port = name, command, env, int(port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = run.folder / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Server:
        """Started, and answering ``/healthz``."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(  # its own process group: workers stop with it
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        time.sleep(1.0)  # let every worker finish starting
                        return self
            time.sleep(0.1)
        self.stop()
        tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{self.name} did not start; the end of {self.log}:\n{tail}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):  # the group's id is our child's pid
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(ProcessLookupError):  # workers that outlived the parent
            os.killpg(self.process.pid, signal.SIGKILL)

    def pids(self) -> list[int]:
        """The server process and all its descendants."""
        found, frontier = [], [self.process.pid] if self.process else []
        while frontier:
            pid = frontier.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    frontier += map(int, (task / "children").read_text().split())
        return found

    def rss_bytes(self) -> int:
        """Resident memory of the server process and its descendants (VmRSS, summed)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(status.split("VmRSS:")[1].split()[0]) * 1024
        return total

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}


def bridge(
    run: Run,
    database_url: str,
    name: str,
    workers: int = 0,
    relay_url: str = "",
    hypercorn: bool = False,
    settings: dict[str, str] | None = None,
) -> Server:
    """``redirect-bridge serve``, the production command, or the bridge under Quart's default
    server, Hypercorn, with its default settings (``workers`` default: the run's), and
    ``settings`` (``BRIDGE_…``) besides."""
    port, workers = _port(), workers or run.settings.workers
    serve = f"serve --host 127.0.0.1 --port {port} --workers {workers}"
    command = [str(BIN / "redirect-bridge"), *serve.split()]
    if hypercorn:
        bind = f"--workers {workers} --bind 127.0.0.1:{port} app:create_app()"
        command = [str(BIN / "hypercorn"), *bind.split()]
    env = _env() | {
        "BRIDGE_SECRET_KEY": run.credentials.secret,
        "BRIDGE_SG_PUBLIC_KEY": run.credentials.public_pem(),
        "BRIDGE_API_KEYS": json.dumps([run.credentials.api_key]),
        "BRIDGE_DATABASE_URL": database_url,
        "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    if relay_url:
        env["BRIDGE_RELAY_URL"] = relay_url
        # Signed as in production (Standard Webhooks): an HMAC per attempt.
        env["BRIDGE_RELAY_SECRET"] = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    return Server(run, name, command, env | (settings or {}), port)


def twin(run: Run, page_bytes: int, status_answer: bytes) -> Server:
    """The bare Quart twin (bench/twin.py) under uvicorn, as ``serve`` runs the bridge."""
    port, workers = _port(), run.settings.workers
    options = (
        f"--host 127.0.0.1 --port {port} --workers {workers} --no-access-log --log-level warning"
    )
    command = [str(BIN / "uvicorn"), "bench.twin:app", *options.split(), "--proxy-headers"]
    env = {"BENCH_TWIN_PAGE_BYTES": str(page_bytes), "BENCH_TWIN_STATUS": status_answer.decode()}
    return Server(run, "twin", command, _env() | env, port)


def limit(run: Run, answers: Path) -> Server:
    """bench/limit.py's bare ASGI callable under serve's own server, sending ``answers``."""
    port, workers = _port(), str(run.settings.workers)
    command = [sys.executable, "-m", "bench.limit", port, workers]
    return Server(run, "limit", command, _env() | {"BENCH_LIMIT_ANSWERS": str(answers)}, port)


def partner(run: Run, log: Path | None = None) -> Server:
    """bench/partner.py: answers every POST 200 at once, counts them (and logs each to
    ``log``, if given)."""
    port = _port()
    command = [sys.executable, "-m", "bench.partner", port, *([str(log)] if log else [])]
    return Server(run, "partner", command, _env(), port)
