"""Where a bridge worker's time goes under load (``--profile``): py-spy samples every worker
while wrk runs, then the event-loop threads' samples are summed by where they are."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .common import say

PROFILES = Path(__file__).resolve().parent / "results" / "profiles"
# Inclusive shares: a sample counts for every group whose marker is anywhere in its stack.
GROUPS = {
    "uvicorn + httptools (HTTP in and out)": ("uvicorn/protocols/http",),
    "Quart request handling (all of it)": ("handle_request (quart/app.py",),
    "  before_request hooks": ("preprocess_request (quart/app.py",),
    "  after_request hooks": ("process_response (quart/app.py",),
    "  the view itself": ("Quart.dispatch_request (quart/app.py",),
    "request id and log lines (app/logs.py, logging)": ("app/logs.py", "logging/__init__.py"),
    "rate limiter (app/limits.py)": ("app/limits.py",),
    "metrics (app/metrics.py, prometheus_client)": ("app/metrics.py", "prometheus_client"),
    "CORS (app/cors.py)": ("app/cors.py",),
    "quart_schema (converting pydantic answers)": ("quart_schema",),
    "security headers (app/security.py)": ("app/security.py",),
    "token read (app/tokens.py, itsdangerous)": ("app/tokens.py", "itsdangerous"),
    "Jinja rendering": ("jinja2/",),
    "  of which i18n (app/i18n.py)": ("app/i18n.py",),
    "signature check (app/signature.py)": ("app/signature.py",),
    "webhook parsing and checks (app/provider.py)": ("app/provider.py",),
    "the relay (app/relay.py, aiohttp)": ("app/relay.py", "aiohttp/"),
    "storage (app/store, sqlite3, asyncpg)": ("app/store/", "sqlite3/", "asyncpg/"),
    "json": ("json/",),
    "pydantic": ("pydantic",),
    "werkzeug (routing, headers, locals)": ("werkzeug/",),
}
IDLE = ("Runner.run", "select (selectors", "run_forever", "asyncio_run")


def record(pids: list[int], seconds: float, name: str, load: Callable[[], object]) -> None:
    """Sample ``pids`` while ``load()`` runs; a summary goes to bench/results/profiles/."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("bench: --profile needs py-spy (bench/run --profile installs it)")
    out = PROFILES / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    raws = [out / f"{name}-{pid}.raw" for pid in pids]
    command = [spy, "record", "-r", "100", "-d", str(int(seconds) + 1), "-f", "raw", "-o"]
    spies = [
        subprocess.Popen(
            [*command, str(raw), "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, raw in zip(pids, raws, strict=True)
    ]
    time.sleep(0.5)
    load()
    for process in spies:
        try:
            process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            process.terminate()
    stacks: collections.Counter[str] = collections.Counter()
    for raw in filter(Path.exists, raws):
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "asyncio_run" in stack or "Runner.run" in stack:  # the event-loop thread only
                stacks[stack] += int(count)
    summary = out / f"{name}-summary.txt"
    summary.write_text(summarise(stacks))
    say(f"profile: {summary}")


def summarise(stacks: collections.Counter[str]) -> str:
    total = sum(stacks.values())
    if not total:
        return "no samples of an event-loop thread\n"
    leaves: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        leaves[stack.split(";")[-1]] += count
    idle = sum(count for leaf, count in leaves.items() if leaf.startswith(IDLE))
    lines = [f"{total} samples of the event-loop threads; {100 * idle / total:.1f}% idle (for I/O)"]
    lines += ["", "inclusive share of samples:"]
    for group, markers in GROUPS.items():
        count = sum(n for stack, n in stacks.items() if any(m in stack for m in markers))
        lines.append(f"  {100 * count / total:5.1f}%  {group}")
    lines += ["", "top functions where the samples were taken (self time):"]
    lines += [f"  {100 * n / total:5.1f}%  {leaf}" for leaf, n in leaves.most_common(20)]
    return "\n".join(lines) + "\n"
