"""The bridge as a real server for tests: ``redirect-bridge serve`` in a process of its own, and
a small HTTP client of its API (also used against in-thread servers by the browser tests)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign

from .conftest import RELAY_SECRET

# How long a bridge may take to answer /readyz: a second or two here, far longer on a machine
# busy with other work (two workers, a PostgreSQL pool, the browser tests beside it).
START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(**settings: str) -> dict[str, str]:
    """This process's environment without its ``BRIDGE_*`` variables, plus ``settings`` (named
    without the prefix).

    The test webhooks carry fixed dates on the provider's clock (``tests/payloads.py``), and a
    served bridge ignores a webhook older than its retention period on the wall clock: unless
    told otherwise, it keeps ten years.
    """
    inherited = {
        name: value for name, value in os.environ.items() if not name.startswith("BRIDGE_")
    }
    settings = {"RETENTION_DAYS": "3650", "RELAY_SECRET": RELAY_SECRET, **settings}
    return {**inherited, **{f"BRIDGE_{name}": value for name, value in settings.items()}}


class Answer(NamedTuple):
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class Client:
    """Talks to a bridge at ``url`` as the provider (signing with ``key``), a partner's backend
    (``api_key``) and a customer's browser would."""

    url: str
    key: rsa.RSAPrivateKey
    api_key: str = ""

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """Any answer, errors included."""
        request = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return Answer(answer.status, _lower(answer.headers.items()), answer.read())
        except urllib.error.HTTPError as error:
            return Answer(error.code, _lower(error.headers.items()), error.read())

    def get(self, path: str) -> bytes:
        status, _, body = self.call("GET", path)
        assert status == 200, (path, status, body[:200])
        return body

    def signed(self, payload: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """A webhook's body and headers, as Smart Glocal sends it."""
        body = json.dumps(payload).encode()
        return body, {"Content-Type": "application/json", "X-PARTNER-SIGN": sign(self.key, body)}

    def deliver(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        status, _, answer = self.call("POST", "/webhooks/smart-glocal", body, headers)
        return status, json.loads(answer)

    def send(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Sign and deliver a webhook; it must be accepted."""
        status, answer = self.deliver(*self.signed(payload))
        assert status == 200, answer
        return answer

    def token(self, session_id: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        status, _, answer = self.call(
            "POST", f"/api/v1/sessions/{session_id}/tokens", None, headers
        )
        assert status == 201, answer[:200]
        return json.loads(answer)

    def status(self, token: str) -> dict[str, Any]:
        return json.loads(self.get(f"/api/v1/status/{token}"))


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


class Served:
    """``redirect-bridge serve`` in a process group of its own, so kill -9 takes every worker;
    its output goes to ``log`` when given."""

    def __init__(
        self,
        environment: dict[str, str],
        *,
        workers: int = 1,
        log: Path | None = None,
        script: Path | None = None,
        cwd: Path | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """``script``: the ``redirect-bridge`` command to run, else this environment's;
        ``prefix``: a command that runs it (``strace -f …``)."""
        self.environment = environment
        self.workers = workers
        self.log = log
        self.script = script
        self.cwd = cwd
        self.prefix = prefix or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Served:
        """Start, and return once ``/readyz`` says ready."""
        script = self.script or shutil.which(
            "redirect-bridge", path=str(Path(sys.executable).parent)
        )
        command = [*self.prefix, *([str(script)] if script else [sys.executable, "-m", "app"])]
        command += ["serve", "--port", str(self.port), "--workers", str(self.workers)]
        output = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                command,
                env=self.environment,
                cwd=self.cwd,
                stdout=output,
                stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            if self.log:
                output.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/readyz", timeout=5).read()
                return self
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.kill()  # not left running into the tests after this one
                    said = self.log.read_text(errors="replace")[-3000:] if self.log else ""
                    raise RuntimeError(f"the bridge did not start\n{said}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):  # gone already
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
