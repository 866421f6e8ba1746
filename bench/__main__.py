"""Benchmark the bridge against a bare Quart twin, under its production server, on loopback.

Parts (all by default; --only picks some):
  routes   the bridge's /pay, status and webhook (relay on) routes vs. the twin's
  servers  the bridge under `redirect-bridge serve` (uvicorn) vs. Quart's default Hypercorn
  scale    status lookups with 1,000 vs. 1,000,000 sessions stored; bytes per session
  waiters  10,000 long-polls on one worker: memory per waiter, webhook-to-answer delay
  relay    the webhook route with the relay on (a partner answering 200 at once) and off
  engines  the webhook route with the relay on, on PostgreSQL against SQLite, in one run
  soak     --soak-minutes of a partner's mix at a fixed rate (half the capacity measured
           first, or --soak-rate): a row per --soak-window minutes, a verdict at the end
  limit    the bridge's kept page and status answer vs. a bare ASGI callable sending the same
           bytes under the same server (bench/limit.py): the limit of this server

Load comes from wrk (64 connections, 2 threads) against 127.0.0.1 only; every run is bounded
by --duration (the soak's, from its own open-loop client, by --soak-minutes). A benchmark,
not a test: it prints numbers and never fails on a missed target. Start it with bench/run
(installs wrk, raises the open-file limit).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from . import report
from .common import Settings, say, started
from .routes import routes_part
from .scale import scale_part
from .soak import soak_part
from .waiters import waiters_part

PARTS = ("routes", "servers", "scale", "waiters", "relay", "engines", "limit", "soak")
ENGINES = ("sqlite", "postgresql")


def _names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(value: str) -> tuple[str, ...]:
        names = tuple(name.strip() for name in value.split(",") if name.strip())
        if unknown := set(names) - set(allowed):
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(sorted(unknown))}")
        return names

    return parse


OPTIONS: list[tuple[str, Callable[[str], Any], Any, str]] = [
    ("--only", _names(PARTS), PARTS, "comma-separated parts"),
    ("--duration", float, 10.0, "seconds per measurement"),
    ("--warmup", float, 2.0, "seconds of discarded load before a server's first measurement"),
    ("--rounds", int, 3, "measurements of each, interleaved; the median is kept"),
    ("--attempts", int, 3, "measurements in all while others use the CPUs (least disturbed kept)"),
    ("--quiet-wait", float, 120.0, "seconds to wait for the other processes to calm down"),
    ("--workers", int, len(os.sched_getaffinity(0)), "worker processes of each server"),
    ("--engine", str, "sqlite", "storage: sqlite or postgresql"),
    ("--scale-engines", _names(ENGINES), ENGINES, "engines for the scale part"),
    ("--sessions", int, 1_000_000, "sessions stored at the scale part's large size"),
    ("--waiters", int, 10_000, "long-polls held open"),
    ("--soak-minutes", float, 30.0, "the soak's length"),
    ("--soak-window", float, 5.0, "minutes of the soak a row covers (the first: warm-up)"),
    ("--soak-rate", float, 0.0, "the soak's requests a second (0: half the capacity measured)"),
]


def settings(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, kind, default, text in OPTIONS:
        shown = ",".join(default) if isinstance(default, tuple) else f"{default}"
        shown = f"{default:,}" if isinstance(default, int | float) else shown
        parser.add_argument(name, type=kind, default=default, help=f"{text} (default {shown})")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="each route of the bridge again under py-spy, summaries in bench/results/profiles/",
    )
    parser.add_argument(
        "--soak-trace",
        action="store_true",
        help="the soak's workers trace their allocations (slower): what grew, by line",
    )
    found = Settings(**vars(parser.parse_args(argv)))
    if min(found.rounds, found.attempts, found.workers) < 1 or found.engine not in ENGINES:
        parser.error(
            "--rounds, --attempts and --workers must be at least 1, and --engine"
            " sqlite or postgresql"
        )
    if min(found.soak_minutes, found.soak_window) <= 0 or found.soak_rate < 0:
        parser.error("--soak-minutes and --soak-window must be above 0, --soak-rate at least 0")
    return found


def main(argv: list[str] | None = None) -> int:
    chosen = settings(argv)
    # Stopped from outside: unwind, so every server this run started is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began, about = time.time(), report.machine(len(os.sched_getaffinity(0)))
    say("machine: " + ", ".join(f"{key} {value}" for key, value in about.items()))
    with started(chosen) as run:
        try:
            if {"routes", "servers", "relay", "engines", "limit"} & set(chosen.only):
                run.results |= routes_part(run)
            if "scale" in chosen.only:
                run.results["scale"] = scale_part(run)
            if "waiters" in chosen.only:
                run.results["waiters"] = waiters_part(run)
            if "soak" in chosen.only:
                run.results["soak"] = soak_part(run)
        except KeyboardInterrupt:
            say("interrupted; reporting what was measured")
    report.write(run, about, began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
