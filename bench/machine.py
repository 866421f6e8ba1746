"""The machine and the software versions a run measured."""

from __future__ import annotations

import glob
import platform
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path

from . import wrk
from .context import cpu_count


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "unknown"


def _postgres() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        return "not installed"
    run = subprocess.run([found[-1], "--version"], capture_output=True, text=True)
    return run.stdout.strip().removeprefix("postgres (PostgreSQL) ")


def _os() -> str:
    try:
        fields = dict(
            line.split("=", 1)
            for line in Path("/etc/os-release").read_text().splitlines()
            if "=" in line
        )
        return fields.get("PRETTY_NAME", "").strip('"')
    except OSError:
        return platform.platform()


def _commit() -> str:
    """The bridge's commit measured, and whether app/ or templates/ had uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "app", "templates", "static", "pyproject.toml"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{commit}{' with uncommitted changes' if dirty else ''}" if commit else "unknown"


def describe() -> dict[str, str]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "commit": _commit(),
        "cpu": _cpu_model(),
        "cores": str(cpu_count()),
        "memory": _memory(),
        "os": f"{_os()}, Linux {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _postgres(),
        "quart": version("quart"),
        "uvicorn": version("uvicorn"),
        "uvloop": version("uvloop"),
        "httptools": version("httptools"),
        "hypercorn": version("hypercorn"),
        "wrk": wrk.version(),
    }
