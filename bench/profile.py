"""Where a bridge worker's time goes under load: py-spy samples every worker while wrk runs,
then the samples of the event-loop thread are summed by where they are (inclusive shares)."""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .context import say

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
    "storage (app/store, aiosqlite, asyncpg)": ("app/store/", "aiosqlite/", "asyncpg/"),
    "json": ("json/",),
    "pydantic": ("pydantic",),
    "werkzeug (routing, headers, locals)": ("werkzeug/",),
}
IDLE_LEAVES = ("Runner.run", "select (selectors", "run_forever", "asyncio_run")


def binary() -> str | None:
    candidates = [shutil.which("py-spy"), str(Path(sys.executable).parent / "py-spy")]
    return next((found for found in candidates if found and Path(found).exists()), None)


def record(pids: list[int], seconds: float, out: Path, load: Callable[[], object]) -> Path:
    """Sample ``pids`` while ``load()`` runs; returns a text summary beside the raw samples."""
    spy = binary()
    if spy is None:
        raise SystemExit("bench: --profile needs py-spy (bench/run --profile installs it)")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.raw"):  # an earlier run's samples
        old.unlink()
    raws = [out / f"{out.name}-{pid}.raw" for pid in pids]
    spies = [
        subprocess.Popen(
            [
                spy,
                "record",
                "-r",
                "100",
                "-d",
                str(int(seconds) + 1),
                "-f",
                "raw",
                "-o",
                str(raw),
                "-p",
                str(pid),
            ],
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
    summary = out / f"{out.name}-summary.txt"
    summary.write_text(summarise([raw for raw in raws if raw.exists()]))
    say(f"profile: {summary}")
    return summary


def summarise(raws: list[Path]) -> str:
    stacks: collections.Counter[str] = collections.Counter()
    for raw in raws:
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if "asyncio_run" in stack or "Runner.run" in stack:  # the event-loop thread only
                stacks[stack] += int(count)
    total = sum(stacks.values())
    if not total:
        return "no samples of an event-loop thread\n"
    idle = sum(n for s, n in stacks.items() if s.split(";")[-1].startswith(IDLE_LEAVES))
    lines = [
        f"{total} samples of the workers' event-loop threads; idle (waiting for I/O): "
        f"{100 * idle / total:.1f}%",
        "",
        "inclusive share of samples:",
    ]
    for name, markers in GROUPS.items():
        count = sum(n for s, n in stacks.items() if any(marker in s for marker in markers))
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    leaves: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        leaves[stack.split(";")[-1]] += count
    lines += ["", "top functions where the samples were taken (self time):"]
    lines += [f"  {100 * n / total:5.1f}%  {leaf}" for leaf, n in leaves.most_common(20)]
    return "\n".join(lines) + "\n"
