"""Running wrk (Debian's package) on loopback and reading its numbers."""

from __future__ import annotations

import collections
import json
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from . import load

LUA = Path(__file__).resolve().parent / "lua"
THREADS = 2
CONNECTIONS = 64


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    generated: int  # requests the script built (bodies/paths scripts only)
    wrapped: int  # times a thread went round its share of bodies again
    other_cores: float = 0.0  # CPU other processes used meanwhile (see bench/load.py)
    steal_cores: float = 0.0
    attempt: int = 0  # which attempt of a repeated measurement this is
    connections_per_worker: tuple[int, ...] = ()  # halfway through, largest first

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, float | int | dict[str, int]]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "errors": self.errors,
            "generated": self.generated,
            "wrapped": self.wrapped,
            "other_cores": self.other_cores,
            "steal_cores": self.steal_cores,
            "attempt": self.attempt,
            "connections_per_worker": list(self.connections_per_worker),
        }


def binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench: wrk is not installed; bench/run installs it (apt-get install wrk)")
    return found


def version() -> str:
    run = subprocess.run([binary(), "--version"], capture_output=True, text=True)
    return (run.stdout or run.stderr).split(" Copyright")[0].strip()


def run(
    url: str,
    seconds: float,
    *,
    script: str = "plain",
    args: tuple[str, ...] = (),
    connections: int = CONNECTIONS,
    threads: int = THREADS,
) -> Result:
    """wrk against ``url`` (loopback only) for ``seconds``; ``script`` is a file of bench/lua."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"bench only sends load to 127.0.0.1, not {url}")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write((LUA / f"{script}.lua").read_text())
        lua.write("\n")
        lua.write((LUA / "report.lua").read_text())
    command = [
        binary(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(int(round(seconds)), 1)}s",
        "--timeout",
        "10s",
        "-s",
        lua.name,
        url,
    ]
    if args:
        command += ["--", *args]
    monitor = load.Monitor()
    spread: list[int] = []
    # Halfway through: how the connections are spread over the server's worker processes.
    sampler = threading.Timer(seconds / 2, lambda: spread.extend(connections_per_process(url)))
    sampler.start()
    try:
        # wrk's own -d bounds the run; the timeout here is a backstop against a hang.
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    finally:
        Path(lua.name).unlink(missing_ok=True)
        sampler.cancel()
    machine = monitor.stop()
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    latency = data["latency_us"]
    return Result(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=data["errors"],
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        max_ms=latency["max"] / 1000,
        generated=data["generated"],
        wrapped=data["wrapped"],
        connections_per_worker=tuple(spread),
        **machine,
    )


def connections_per_process(url: str) -> list[int]:
    """Established connections to ``url``'s port, counted by the process that holds them
    (largest first), from ``ss``."""
    port = url.split(":")[2].split("/")[0]
    try:
        listing = subprocess.run(
            ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    counts = collections.Counter(re.findall(r"pid=(\d+)", listing))
    return sorted(counts.values(), reverse=True)
