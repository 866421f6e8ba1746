"""The servers under test, each a real subprocess on 127.0.0.1: the bridge under
``redirect-bridge serve`` (uvicorn) or Hypercorn, and the bare twin under uvicorn."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_has_workers() -> bool:
    """Whether ``redirect-bridge serve`` takes ``--workers`` (the lead is adding it)."""
    help_text = subprocess.run(
        [str(VENV_BIN / "redirect-bridge"), "serve", "--help"], capture_output=True, text=True
    ).stdout
    return "--workers" in help_text


class Server:
    """One server process group; ``url`` is its base URL once :meth:`start` returns."""

    def __init__(
        self, name: str, command: list[str], env: Mapping[str, str], port: int, log: Path
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> Server:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: workers stop with it
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start; see {self.log}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        time.sleep(1.0)  # let every worker finish starting
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer /healthz in {timeout:.0f} s:\n{self.tail()}"
        )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # start_new_session: the group id is our child's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
            self.process.wait()
        # Workers of the group that outlived the parent.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)

    def pids(self) -> list[int]:
        """The server process and all its descendants."""
        if self.process is None:
            return []
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    children = (task / "children").read_text().split()
                    frontier += [int(child) for child in children]
        return found

    def rss_bytes(self) -> int:
        """Resident memory of the server process and its descendants (VmRSS, summed)."""
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        return total

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def bridge_env(
    *, secret: str, public_key_pem: str, api_key: str, database_url: str, port: int
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
    env.update(
        BRIDGE_SECRET_KEY=secret,
        BRIDGE_SG_PUBLIC_KEY=public_key_pem,
        BRIDGE_API_KEYS=f'["{api_key}"]',
        BRIDGE_DATABASE_URL=database_url,
        BRIDGE_PUBLIC_URL=f"http://127.0.0.1:{port}",
    )
    return env


def bridge_uvicorn(
    env: Mapping[str, str], workers: int | None, logs: Path, name: str = "bridge"
) -> Server:
    """``redirect-bridge serve``, the production command; ``--workers`` when it exists."""
    port = free_port()
    command = [
        str(VENV_BIN / "redirect-bridge"),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = {**env, "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    return Server(name, command, env, port, logs / f"{name}-{port}.log")


def bridge_hypercorn(env: Mapping[str, str], workers: int, logs: Path) -> Server:
    """The bridge under Quart's default server, Hypercorn, with its default settings."""
    port = free_port()
    command = [
        str(VENV_BIN / "hypercorn"),
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "app:create_app()",
    ]
    env = {**env, "BRIDGE_PUBLIC_URL": f"http://127.0.0.1:{port}"}
    return Server("bridge-hypercorn", command, env, port, logs / f"hypercorn-{port}.log")


def twin_uvicorn(twin_env: Mapping[str, str], workers: int, logs: Path) -> Server:
    """The bare Quart twin under uvicorn, as ``serve`` runs the bridge (no access log)."""
    port = free_port()
    command = [
        str(VENV_BIN / "uvicorn"),
        "bench.twin:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
        "--proxy-headers",
    ]
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")},
        **twin_env,
    }
    return Server("twin", command, env, port, logs / f"twin-{port}.log")


@contextlib.contextmanager
def log_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as folder:
        yield Path(folder)
