"""Benchmark the bridge against a bare Quart twin, under its production server, on loopback.

Parts (all by default; --only picks some):
  routes   the bridge's /pay, status and webhook routes vs. the twin's, same server and workers
  servers  the bridge under `redirect-bridge serve` (uvicorn) vs. Quart's default Hypercorn
  scale    status lookups with 1,000 vs. 1,000,000 sessions stored; bytes per session
  waiters  10,000 long-polls on one worker: memory, and webhook-to-answer delay
  relay    the webhook route with the relay on (a partner answering 200 at once) and off

Load comes from wrk (64 connections, 2 threads) against 127.0.0.1 only; every run is bounded
by --duration. A benchmark, not a test: it prints numbers and never fails on a missed target.
Start it with bench/run (installs wrk, raises the open-file limit).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from . import report, servers
from .context import context, cpu_count, say
from .machine import describe

PARTS = ("routes", "servers", "scale", "waiters", "relay")
RESULTS = Path(__file__).resolve().parent / "results"


def _parts(value: str) -> list[str]:
    chosen = [part.strip() for part in value.split(",") if part.strip()]
    unknown = set(chosen) - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s): {', '.join(sorted(unknown))}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        type=_parts,
        default=list(PARTS),
        help="comma-separated parts: routes,servers,scale,waiters,relay (default: all)",
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds per measurement (default 10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of discarded load before each measurement (default 2)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes for the bridge and the twin (default: every core)",
    )
    parser.add_argument(
        "--engine",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="storage for routes, servers, waiters and relay (default sqlite)",
    )
    parser.add_argument(
        "--scale-engines",
        default="sqlite,postgresql",
        help="engines for the scale part (default sqlite,postgresql)",
    )
    parser.add_argument(
        "--sessions",
        type=int,
        default=1_000_000,
        help="sessions stored for the scale part's large size (default 1,000,000)",
    )
    parser.add_argument(
        "--spread",
        type=int,
        default=10_000,
        help="distinct sessions looked up at the large size (default 10,000)",
    )
    parser.add_argument(
        "--waiters", type=int, default=10_000, help="long-polls held open (default 10,000)"
    )
    parser.add_argument(
        "--wake",
        type=int,
        default=1000,
        help="waiters woken by a webhook each, out of --waiters (default 1,000)",
    )
    parser.add_argument(
        "--wake-concurrency",
        type=int,
        default=8,
        help="webhooks in flight while waking (default 8)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each bridge route's measurement, run it again under py-spy and"
        " write where the workers' time goes to bench/results/profiles/",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure each route on each server this many times, interleaved, and keep the"
        " median (default 3)",
    )
    parser.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="measure again when other processes took CPU meanwhile, up to this many times in"
        " all, keeping the least disturbed (default 3)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=120.0,
        help="before each measurement, wait up to this many seconds for other processes to"
        " leave the CPUs alone (default 120)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "latest.json",
        help="where to write the results (default bench/results/latest.json)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=RESULTS / "latest.md",
        help="where to write the tables as Markdown (default bench/results/latest.md)",
    )
    args = parser.parse_args(argv)
    # Stopped from outside: unwind, so every server this run started is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if servers.serve_has_workers():
        workers: int | None = args.workers or cpu_count()
    else:
        workers = None
    started = time.time()
    machine = describe()
    say("machine: " + ", ".join(f"{key} {value}" for key, value in machine.items()))
    with context(
        logs=RESULTS / "logs",
        duration=args.duration,
        warmup=args.warmup,
        workers=workers,
        engine=args.engine,
        profile=RESULTS / "profiles" if args.profile else None,
        rounds=max(args.rounds, 1),
        attempts=max(args.attempts, 1),
        quiet_wait=args.quiet_wait,
    ) as ctx:
        if workers is None:
            ctx.note(
                "`redirect-bridge serve` has no --workers here: the bridge runs one process,"
                " and so do the twin and Hypercorn"
            )
        say(f"workers: {ctx.worker_count} for the bridge, the twin and Hypercorn")
        try:
            if "routes" in args.only or "servers" in args.only:
                ctx.results.update(
                    _part("routes", ctx, "routes" in args.only, "servers" in args.only)
                )
            if "scale" in args.only:
                engines = [e.strip() for e in args.scale_engines.split(",") if e.strip()]
                ctx.results["scale"] = _part("scale", ctx, engines, args.sessions, args.spread)
            if "waiters" in args.only:
                ctx.results["waiters"] = _part(
                    "waiters", ctx, args.waiters, args.wake, args.wake_concurrency
                )
            if "relay" in args.only:
                ctx.results["relay"] = _part("relay", ctx)
        except KeyboardInterrupt:
            say("interrupted; reporting what was measured")
        run = {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
            "minutes": round((time.time() - started) / 60, 1),
            "machine": machine,
            "settings": {
                "duration": args.duration,
                "warmup": args.warmup,
                "workers": ctx.worker_count,
                "serve_has_workers": workers is not None,
                "engine": args.engine,
                "connections": ctx.connections,
                "rounds": ctx.rounds,
            },
            "results": ctx.results,
            "notes": ctx.notes,
        }
    found = report.tables(run["results"], ctx.worker_count)
    print()
    print(
        f"Redirect Bridge benchmarks: {machine['cores']} cores ({machine['cpu']}), "
        f"{ctx.worker_count} workers, {args.engine}, wrk {ctx.connections} connections, "
        f"{args.duration:.0f} s per measurement"
    )
    for table in found:
        print()
        print(report.text(table))
    for note in run["notes"]:
        print(f"note: {note}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run, indent=2, default=str) + "\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("\n\n".join(report.markdown(table) for table in found) + "\n")
    print(f"\nresults: {args.json} and {args.markdown} ({run['minutes']} minutes)")
    return 0


def _part(name: str, ctx, *extra):  # type: ignore[no-untyped-def]
    from . import relay, routes, scale, waiters

    if name == "routes":
        shown = " and ".join(
            part for part, on in zip(("routes", "servers"), extra, strict=True) if on
        )
    else:
        shown = name
    say(f"=== {shown} ===")
    part = {
        "routes": routes.routes_and_servers,
        "scale": scale.scale_part,
        "waiters": waiters.waiters_part,
        "relay": relay.relay_part,
    }[name]
    return part(ctx, *extra)


if __name__ == "__main__":
    sys.exit(main())
