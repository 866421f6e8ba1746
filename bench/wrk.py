"""Load from wrk (Debian's package) on loopback, and what else used the machine meanwhile.

A shared machine skews every ratio, so each measurement records the CPU used by processes that
are not the run's (the harness, its children, its PostgreSQL) and what the hypervisor stole, in
cores (1.0 = one core busy the whole time); a disturbed measurement is made again.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import Run, say

LUA = Path(__file__).resolve().parent / "lua"
THREADS, CONNECTIONS = 2, 64
DISTURBED = 0.15  # cores of other processes' CPU that make a measurement worth repeating
TICKS = os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass(frozen=True)
class Result:
    """One wrk run's figures (bench/lua/report.lua), and what else used the machine."""

    requests: int
    seconds: float
    rate: float
    bytes: int
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    generated: int  # requests the Lua script built
    wrapped: int  # times a thread went round its share of bodies again (then duplicates)
    other_cores: float  # CPU other processes used meanwhile
    steal_cores: float
    connections_per_worker: list[int]  # halfway through, by server process, largest first
    attempt: int = 0  # which attempt of a repeated measurement this is


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: its parent and the CPU seconds it has used."""
    found = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return found


class Monitor:
    """CPU used by others from creation to :meth:`stop`. Ours: the harness and its descendants,
    the run's ``roots`` (PostgreSQL) and the kernel's threads (ksoftirqd carries loopback)."""

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.started = roots, time.monotonic()
        self.busy, self.steal, self.ours = self._totals(_processes())

    def _mine(self, processes: dict[int, tuple[int, float]]) -> set[int]:
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in processes.items():
            children.setdefault(parent, []).append(pid)
        mine, frontier = set(), [os.getpid(), *self.roots, 2]  # 2: kthreadd
        while frontier:
            if (pid := frontier.pop()) not in mine:
                mine.add(pid)
                frontier += children.get(pid, [])
        return mine

    def _totals(self, processes: dict[int, tuple[int, float]]) -> tuple[float, float, float]:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        user, nice, system, *_, steal = (int(field) for field in fields)  # irq: loopback, ours
        mine = self._mine(processes) - {os.getpid()}
        # The harness and the children it reaped, whose time left the live processes' sums.
        usage = map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
        ours = sum(cpu for pid, (_, cpu) in processes.items() if pid in mine)
        ours += sum(use.ru_utime + use.ru_stime for use in usage)
        return (user + nice + system) / TICKS, steal / TICKS, ours

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        busy, steal, ours = self._totals(_processes())
        other = max(busy - self.busy - (ours - self.ours), 0.0)
        stolen = (steal - self.steal) / elapsed
        return {"other_cores": round(other / elapsed, 2), "steal_cores": round(stolen, 2)}


def wait_for_quiet(run: Run) -> None:
    """Until other processes use under ``DISTURBED`` cores over a second (at most
    ``--quiet-wait`` seconds)."""
    deadline, told = time.monotonic() + run.settings.quiet_wait, False
    while True:
        monitor = Monitor(run.roots)
        time.sleep(1.0)
        if (other := monitor.stop()["other_cores"]) < DISTURBED:
            return
        if time.monotonic() >= deadline:
            return say(f"other processes use {other:.1f} cores; measuring anyway")
        if not told:
            say(f"other processes use {other:.1f} cores; waiting for them to calm down")
            told = True


def connections_by_process(port: str) -> dict[int, int]:
    """Established connections to ``port``, counted by the process holding them (from ss)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        command = ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"]
        listing = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
        return dict(collections.Counter(map(int, re.findall(r"pid=(\d+)", listing))))
    return {}


def _connections(port: str) -> list[int]:
    """Established connections to ``port`` by server process, largest first."""
    return sorted(connections_by_process(port).values())[::-1]


def wrk(run: Run, url: str, seconds: float, script: str, lines: Path) -> Result:
    """wrk against ``url`` (loopback only) for ``seconds``; ``script`` (of bench/lua) sends
    the requests of the file ``lines``, each thread its share."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"bench only sends load to 127.0.0.1, not {url}")
    if (binary := shutil.which("wrk")) is None:
        raise SystemExit("bench: wrk is not installed; bench/run installs it")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write((LUA / f"{script}.lua").read_text() + (LUA / "report.lua").read_text())
    command = [binary, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(round(seconds), 1)}s"]
    command += ["--timeout", "10s", "-s", lua.name, url, "--", str(lines), str(THREADS)]
    monitor, spread = Monitor(run.roots), []
    port = url.split(":")[2].split("/")[0]
    sampler = threading.Timer(seconds / 2, lambda: spread.extend(_connections(port)))
    sampler.start()
    try:  # wrk's own -d bounds the run; the timeout is a backstop against a hang
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30)
    finally:
        Path(lua.name).unlink()
        sampler.cancel()
    machine = monitor.stop()
    line = next((line for line in done.stdout.splitlines() if line.startswith("BENCH_JSON ")), "")
    if done.returncode != 0 or not line:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    data |= {f"{name}_ms": us / 1000 for name, us in data.pop("latency_us").items()}
    data |= {"seconds": data.pop("duration_us") / 1e6, "connections_per_worker": spread}
    data["rate"] = round(data["requests"] / data["seconds"], 1)
    return Result(**data | machine)


def measure(
    run: Run, label: str, url: str, script: str, lines: Callable[[int], Path], warmup: bool
) -> Result:
    """A warm-up (discarded) if asked, then the measurement; again (up to ``--attempts`` in
    all) when other processes took CPU meanwhile, keeping the least disturbed. ``lines(n)``:
    the file of requests for attempt ``n`` (a webhook measurement takes a new pool each)."""
    say(f"{label} for {run.settings.duration:.0f} s")
    best: Result | None = None
    for attempt in range(run.settings.attempts):
        if best is not None:
            say(f"  other processes used {best.other_cores:.2f} cores meanwhile; measuring again")
        requests = lines(attempt)
        wait_for_quiet(run)
        if warmup and run.settings.warmup > 0:
            wrk(run, url, run.settings.warmup, script, requests)
        result = wrk(run, url, run.settings.duration, script, requests)
        if best is None or result.other_cores < best.other_cores:
            best = dataclasses.replace(result, attempt=attempt)
        if result.other_cores < DISTURBED:
            break
    assert best is not None
    errors = f", errors {best.errors}" if any(best.errors.values()) else ""
    say(f"{label}: {best.rate:,.0f} req/s, p50 {best.p50_ms:.1f}, p99 {best.p99_ms:.1f} ms{errors}")
    return best


def median(results: list[Result]) -> dict[str, Any]:
    """The round with the median rate (its latencies with it), and every round's rate."""
    kept = sorted(results, key=lambda result: result.rate)[(len(results) - 1) // 2]
    return dataclasses.asdict(kept) | {"rounds": [result.rate for result in results]}
