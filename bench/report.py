"""A run's tables against the targets below (in Markdown), and the machine it ran on."""

from __future__ import annotations

import collections
import json
import platform
import sqlite3
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from .common import RESULTS, Run
from .routes import KEPT_SESSIONS, LABELS

# The targets, against the bare Quart twin in the same run, 64 connections.
RATIO = {"pay": 1.0, "status": 0.85, "webhook": 0.5}  # of the twin's rate; webhook: relay on
P99_FACTOR = 1.5  # each route's p99 at most this times the twin's
SERVER_RATIO = 2.0  # serve (uvicorn) against Quart's default Hypercorn, each route
ENGINE_RATIO = 0.6  # the webhook route (relay on) on PostgreSQL against SQLite, the same run
# The kept page and the plain status answer against a bare ASGI callable sending the same
# bytes under the same server and workers (bench/limit.py).
LIMIT_RATIO = 0.6
SCALE_RATIO = 0.80  # status lookups with 1,000,000 sessions stored against 1,000
WAITER_KB = 15.0  # memory per waiting long-poll: (RSS with the waiters - idle RSS) / waiters
WAITER_P99_MS = 100.0  # from a webhook's 200 to its waiter's answer
BUSY_CORES = 0.1  # other processes' CPU worth a footnote
# The soak, from the first window after the warm-up (the first window) to the last.
SOAK_RSS_GROWTH = 0.05  # RSS of each worker
SOAK_P99_FACTOR = 1.5  # each window's p99 against that first one's

Result = dict[str, Any]
Table = tuple[str, list[str], list[list[str]], list[str]]
Target = Callable[[str, float, Result, Result], tuple[str, list[str]]]


def _lat(result: Result) -> str:
    return f"{result['p50_ms']:.1f} / {result['p99_ms']:.1f}"


def _rate(result: Result) -> str:
    errors = sum(result["errors"].values())
    return f"{result['rate']:,.0f}" + (f" ({errors} errors)" if errors else "")


def _met(failures: list[str]) -> str:
    return "NO: " + ", ".join(failures) if failures else "yes"


def _footnotes(measured: dict[str, Result], workers: int) -> list[str]:
    """Measurements other processes shared the machine with, or whose connections one server
    process mostly held."""
    busy, uneven = [], []
    for name, result in measured.items():
        if result["other_cores"] >= BUSY_CORES:
            busy.append(f"{name} {result['other_cores']:.2f}")
        spread = result["connections_per_worker"]
        if workers > 1 and spread and spread[0] > 0.75 * sum(spread):
            uneven.append(f"{name} {'/'.join(map(str, spread))}")
    notes = [f"other processes used CPU (cores, average) during: {', '.join(busy)}"] if busy else []
    if uneven:
        notes.append(f"connections per server process, unevenly spread: {', '.join(uneven)}")
    return notes


def _kept(checks: list[dict[str, Any]], result: Result) -> dict[str, Any]:
    """The check of the round a median was taken from."""
    return next((check for check in checks if check["requests"] == result["requests"]), {})


def _pair(part: dict[str, Any], names: tuple[str, str], target: Target, workers: int) -> Table:
    """Each route measured on two servers: rates, ratio, latencies, the target; footnotes."""
    first, second = names
    headers = ["route", f"{first} req/s", f"{second} req/s", "ratio"]
    headers += [f"{first} p50 / p99 ms", f"{second} p50 / p99 ms", "target", "met?"]
    rows, rounds, measured = [], [], dict[str, Result]()
    for route in (route for route in LABELS if route in part[first]):
        one, other = part[first][route], part[second][route]
        ratio = one["rate"] / other["rate"] if other["rate"] else 0.0
        shown, failures = target(route, ratio, one, other)
        failures += ["errors"] if sum(one["errors"].values()) else []
        rows.append([LABELS[route], _rate(one), _rate(other), f"{ratio:.2f}", _lat(one)])
        rows[-1] += [_lat(other), shown, _met(failures)]
        if len(one["rounds"]) > 1 and len(one["rounds"]) == len(other["rounds"]):
            each = zip(one["rounds"], other["rounds"], strict=True)
            rounds.append(f"{route} " + "/".join(f"{a / b:.2f}" for a, b in each if b))
        measured |= {f"{first} {route}": one, f"{second} {route}": other}
    notes = [f"ratio in each round: {'; '.join(rounds)}"] if rounds else []
    return "", headers, rows, notes + _footnotes(measured, workers)


def _routes(part: dict[str, Any], workers: int) -> Table:
    def target(route: str, ratio: float, bridge: Result, twin: Result) -> tuple[str, list[str]]:
        limit = P99_FACTOR * twin["p99_ms"]
        failures = ["ratio"] if ratio < RATIO[route] else []
        return f">= {RATIO[route]:.2f}, p99 <= {limit:.0f} ms", failures + (
            ["p99"] if bridge["p99_ms"] > limit else []
        )

    _, headers, rows, notes = _pair(part, ("bridge", "twin"), target, workers)
    rows[-1][0] += " (relay on)"
    sizes, check = part["sizes"], _kept(part["checks"], part["bridge"]["webhook"])
    notes.append(
        f"bytes: /pay page {sizes['bridge_page']:,} (twin {sizes['twin_page']:,}), status"
        f" answer {sizes['status_answer']}, webhook body {sizes['webhook_body']}; the webhook"
        f" log takes {sizes['log_per_webhook']:,} bytes per webhook"
    )
    if check:
        notes.append(
            f"webhooks: {check['requests']:,} answered, {check['stored']:,} stored, pool of"
            f" {check['pool']:,} never reused ({check['wrapped']} wraps); the partner got"
            f" {check.get('delivered', 0):,} of {check.get('deliveries', 0):,} deliveries"
        )
    return "The bridge and its bare twin (same server, same workers)", headers, rows, notes


def _servers(part: dict[str, Any], workers: int) -> Table:
    def target(route: str, ratio: float, *_: Result) -> tuple[str, list[str]]:
        return f">= {SERVER_RATIO:.1f}", ["ratio"] if ratio < SERVER_RATIO else []

    _, headers, rows, notes = _pair(part, ("serve", "hypercorn"), target, workers)
    title = "The production server (uvicorn) against Quart's default Hypercorn (relay off)"
    return title, headers, rows, notes


def _limit(part: dict[str, Any], workers: int) -> Table:
    def target(route: str, ratio: float, *_: Result) -> tuple[str, list[str]]:
        return f">= {LIMIT_RATIO:.2f}", ["ratio"] if ratio < LIMIT_RATIO else []

    _, headers, rows, notes = _pair(part, ("bridge", "limit"), target, workers)
    notes.append(
        "the limit: a bare ASGI callable under serve's own server sending the bytes the bridge"
        " sent (headers and body) for one page and one status answer; the kept pages: the"
        f" first {KEPT_SESSIONS} sessions', built in every worker during the first warm-up"
    )
    title = "The bridge's fast path against the server's limit (same server, same workers)"
    return title, headers, rows, notes


def _relay(part: dict[str, Any], workers: int) -> Table:
    """The webhook route with the relay on and off; how far behind the partner heard."""
    _, headers, rows, notes = _pair(part, ("relay on", "relay off"), lambda *_: ("", []), workers)
    headers, rows = headers[:-2], [row[:-2] for row in rows]  # no target: reported
    relayed = _kept(part["checks"], part["relay on"]["webhook"])
    if relayed.get("delivered"):
        notes.append(
            f"the median round's {relayed['deliveries']:,} deliveries: the partner's 200 came"
            f" {relayed['lag_p50_ms']:,.0f} / {relayed['lag_p99_ms']:,.0f} ms (p50 / p99) after"
            f" receipt; {relayed['delivered_while_receiving']:,} reached it while wrk sent"
            f" ({relayed['relay_rate']:,.0f}/s), the rest within"
            f" {relayed['backlog_cleared_s']} s after the last; {relayed['retried']} retried"
        )
    notes.append(
        f"the partner got {part['partner_received']:,} POSTs for"
        f" {part['deliveries_recorded']:,} deliveries recorded (warm-ups included)"
    )
    return f"The webhook route with the relay on and off ({part['engine']})", headers, rows, notes


def _engines(part: dict[str, Any], workers: int) -> Table:
    def target(route: str, ratio: float, *_: Result) -> tuple[str, list[str]]:
        return f">= {ENGINE_RATIO:.2f}", ["ratio"] if ratio < ENGINE_RATIO else []

    _, headers, rows, notes = _pair(part, ("postgresql", "sqlite"), target, workers)
    rows[-1][0] += " (relay on)"
    notes.append("each bridge relays to a partner of its own; both under serve, same workers")
    return "The webhook route on PostgreSQL against SQLite (same run)", headers, rows, notes


def _scale(part: dict[str, Any], workers: int) -> Table:
    rows, measured = [], {}
    for engine, result in part.items():
        for size in ("small", "large"):
            found, stored = result[size], result[size]["size"]
            target, met = "", ""
            if size == "large":
                target = f">= {SCALE_RATIO:.2f}"
                met = _met(["ratio"] if result["ratio"] < SCALE_RATIO else [])
            per_session = stored["table_bytes"] / max(stored["sessions"], 1)
            rows.append([engine, f"{found['sessions']:,}", _rate(found), _lat(found)])
            ratio = result["ratio"] if size == "large" else 1.0
            rows[-1] += [f"{ratio:.2f}", f"{per_session:,.0f}", target, met]
            measured[f"{engine} {found['sessions']:,}"] = found
    headers = ["engine", "sessions", "status req/s", "p50 / p99 ms", "ratio to 1,000"]
    headers += ["bytes / session", "target", "met?"]
    return "Status lookups by sessions stored", headers, rows, _footnotes(measured, workers)


def _waiters(part: dict[str, Any], workers: int) -> Table:
    delay, kb = part["delay_ms"], part["kb_per_waiter"]
    failures = ["memory"] if kb > WAITER_KB else []
    failures += ["p99"] if delay["p99"] > WAITER_P99_MS else []
    failures += [f"{part['wrong']} wrong answers"] if part["wrong"] else []
    row = [f"{part['waiters']:,} (server counts {part['waiting_reported']})"]
    row += [f"{part['rss_bytes'] / 1e6:,.0f} MB (idle {part['rss_before_bytes'] / 1e6:,.0f})"]
    row += [f"{kb:.1f}", f"{part['woken']:,}, {part['webhook_concurrency']} webhooks in flight"]
    row += [" / ".join(f"{delay[key]:.1f}" for key in ("min", "p50", "p99", "max"))]
    row += [f"<= {WAITER_KB:.0f} KB, p99 <= {WAITER_P99_MS:.0f} ms", _met(failures)]
    headers = ["long-polls held", "server RSS", "KB per waiter", "woken by a webhook"]
    headers += ["webhook 200 to answer min / p50 / p99 / max ms", "target", "met?"]
    notes = [f"other processes used {part['other_cores']:.2f} cores meanwhile"]
    if delay["min"] < 0:
        notes.append("below zero: a waiter's answer left before the webhook's own 200")
    return "Long-poll waiters on one instance (one worker)", headers, [row], notes


def _per_worker(row: dict[str, Any], key: str, scale: float = 1.0) -> str:
    return " / ".join(f"{w[key] / scale:,.0f}" for w in row["workers"].values())


def _soak(part: dict[str, Any], workers: int) -> list[Table]:
    """A row per window, then the verdict against the targets."""
    headers = ["window", "minutes", "req/s", "webhooks/s", "p50 / p99 ms"]
    headers += ["RSS MB per worker", "connections per worker", "fds per worker"]
    headers += ["relay backlog", "sessions stored", "deleted", "held answered", "5xx", "failed"]
    headers += ["others' cores"]
    rows = []
    for number, row in enumerate(part["rows"], 1):
        held = f"{row['held'].get('long-poll', 0):,} / {row['held'].get('events', 0):,}"
        rows.append([f"{number}" + (" (warm-up)" if number == 1 else "")])
        rows[-1] += ["–".join(f"{minute:g}" for minute in row["minutes"]), f"{row['rate']:,.0f}"]
        rows[-1] += [f"{row['by_kind'].get('webhook', 0) / row['seconds']:,.0f}", _lat(row)]
        rows[-1] += [_per_worker(row, "rss", 1e6), _per_worker(row, "connections")]
        rows[-1] += [_per_worker(row, "fds"), f"{row['backlog']:,}", f"{row['sessions']:,}"]
        rows[-1] += [f"{row['deleted']:,}", held, str(row["server_errors"])]
        rows[-1] += [str(sum(row["failed"].values())), f"{row['other_cores']:.2f}"]
    asked = f"{part['rate_asked']:,.0f} requests a second"
    asked += f" (half the capacity measured, {part['capacity']:,.0f})" if part["capacity"] else ""
    notes = [
        f"{asked}, {part['journeys_per_second']:,.1f} journeys a second, {part['engine']};"
        f" retention {part['retention_seconds']:g} s; held answered: long-polls / event streams;"
        " others' cores: the CPU processes not the run's used meanwhile",
        "latencies from when each request was due (an open loop); the client started requests"
        " late by at most (p99 per window) "
        + " / ".join(f"{row['late_p99_ms']:,.0f}" for row in part["rows"])
        + " ms",
    ]
    failed = collections.Counter[str]()
    for row in [*part["rows"], part["after"]]:
        failed.update(row["failed"])
    if failed:
        notes.append("failed: " + ", ".join(f"{why} {count}" for why, count in failed.items()))
    title = f"The soak: {part['rows'][-1]['minutes'][1]:g} min at a fixed rate"
    return [(title, headers, rows, notes), _soak_verdict(part)]


def _soak_verdict(part: dict[str, Any]) -> Table:
    windows, delivered = part["rows"], part["deliveries"]
    checks = []
    if len(windows) < 3:
        checks.append(["windows after the warm-up", ">= 2", f"{len(windows) - 1}", "NO"])
    first, last = windows[min(1, len(windows) - 1)], windows[-1]
    growth = {
        pid: last["workers"][pid]["rss"] / found["rss"] - 1
        for pid, found in first["workers"].items()
        if pid in last["workers"]
    }
    replaced = set(first["workers"]) != set(last["workers"])
    shown = " / ".join(f"{share * 100:+.1f}%" for share in growth.values())
    shown += " (a worker was replaced)" if replaced else ""
    worst = max(growth.values(), default=0.0)
    met = _met(["growth"] * (worst > SOAK_RSS_GROWTH) + ["replaced"] * replaced)
    checks.append(["RSS per worker, window 2 to the last", f"<= {SOAK_RSS_GROWTH:.0%}", shown, met])
    errors = sum(row["server_errors"] for row in [*windows, part["after"]])
    checks.append(["5xx answers", "0", str(errors), _met(["5xx"] * bool(errors))])
    failed = sum(sum(row["failed"].values()) for row in [*windows, part["after"]])
    checks.append(["other failed requests (4xx, no answer)", "0", str(failed)])
    checks[-1].append(_met(["failed"] * bool(failed)))
    lost = delivered["accepted_not_received"] + delivered["recorded_not_received"]
    twice = delivered["accepted_received_twice"] + delivered["ids_received_twice"]
    stuck = sum(n for state, n in delivered["states"].items() if state != "delivered")
    checks.append(
        [
            "lost deliveries (after draining)",
            "0",
            f"{lost} lost, {twice} twice, {stuck} not delivered; {delivered['accepted']:,}"
            f" webhooks accepted, {delivered['posts']:,} POSTs",
            _met(["lost"] * bool(lost) + ["twice"] * bool(twice) + ["stuck"] * bool(stuck)),
        ]
    )
    limit = SOAK_P99_FACTOR * first["p99_ms"]
    over = [str(n) for n, row in enumerate(windows[1:], 2) if row["p99_ms"] > limit]
    p99s = " / ".join(f"{row['p99_ms']:,.0f}" for row in windows[1:])
    checks.append(["p99 of every window", f"<= {limit:,.0f} ms", p99s])
    checks[-1].append(_met([f"window {n}" for n in over]))
    notes = [
        f"the relay drained in {delivered['drain_seconds']} s after the last journey;"
        f" {delivered['recorded']:,} deliveries still recorded (retention deleted the older)"
    ]
    if not part["after"]["finished"]:
        notes.append("some journeys were still open when the soak gave up waiting for them")
    return "The soak's verdict", ["check", "target", "measured", "met?"], checks, notes


Made = Table | list[Table]
TABLES: dict[str, Callable[[dict[str, Any], int], Made]] = {"routes": _routes}
TABLES |= {"servers": _servers, "relay": _relay, "engines": _engines, "limit": _limit}
TABLES |= {"scale": _scale}
TABLES |= {"waiters": _waiters, "soak": _soak}


def markdown(table: Table) -> str:
    """The table in Markdown, its columns aligned for the terminal too."""
    title, headers, rows, notes = table
    widths = [max(map(len, column)) for column in zip(headers, *rows, strict=True)]
    rows = [headers, ["-" * width for width in widths], *rows]
    lines = ["| " + " | ".join(map(str.ljust, row, widths)) + " |" for row in rows]
    return "\n".join([f"**{title}**", "", *lines, *(f"\n_{note}_" for note in notes)])


def _output(*command: str) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "not installed"


def machine(cores: int) -> dict[str, str]:
    """The machine and the software measured; the commit, and whether it had changes."""
    cpu = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    changed = _output(
        "git", "status", "--porcelain", "app", "templates", "static", "pyproject.toml"
    )
    postgres = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    found = {
        "commit": _output("git", "rev-parse", "--short", "HEAD")
        + (" (changed)" if changed else ""),
        "cpu": cpu[0].split(":", 1)[1].strip() if cpu else "unknown",
        "cores": str(cores),
        "memory": f"{memory:.1f} GiB",
        "os": f"{platform.freedesktop_os_release().get('PRETTY_NAME')}, Linux {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": _output(str(postgres[-1]), "--version").split(") ")[-1] if postgres else "",
        "wrk": _output("wrk", "--version").split(" Copyright")[0].removeprefix("wrk "),
    }
    for package in ("quart", "uvicorn", "uvloop", "httptools", "hypercorn"):
        found[package] = metadata.version(package)
    return found


def write(run: Run, about: dict[str, str], started: float) -> None:
    """Print the tables; write them, and every figure, to bench/results/latest.{md,json}."""
    s, minutes = run.settings, round((time.time() - started) / 60, 1)
    tables = []
    for name, make in TABLES.items():
        if name in run.results:
            made = make(run.results[name], s.workers)
            tables += made if isinstance(made, list) else [made]
    print(
        f"\nRedirect Bridge benchmarks: {about['cores']} cores ({about['cpu']}), {s.workers}"
        f" workers, {s.engine}, wrk 64 connections, {s.duration:.0f} s per measurement"
    )
    for table in tables:
        print(f"\n{markdown(table)}")
    for note in run.notes:
        print(f"note: {note}")
    document: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))
    }
    document |= {"minutes": minutes, "machine": about, "settings": vars(s), "notes": run.notes}
    RESULTS.mkdir(parents=True, exist_ok=True)
    document |= {"results": run.results}
    (RESULTS / "latest.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    (RESULTS / "latest.md").write_text("\n\n".join(map(markdown, tables)) + "\n")
    print(f"\nresults: bench/results/latest.md and latest.json ({minutes} minutes)")
