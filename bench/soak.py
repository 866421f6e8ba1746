"""The soak: the bridge under ``serve`` for ``--soak-minutes`` at a fixed rate of a partner's
mix (bench/mix.py, sent by bench/pacer.py): webhooks of the documented flows with the relay on
(provider's webhooks and the bridge's own events) to bench/partner.py, pages, returns from the
bank, status polls, long-polls and event streams, and retention's sweep deleting (a retention of
minutes). The rate is ``--soak-rate`` requests a second, the held ones aside, or half the
capacity measured first: the same mix in a closed loop of 64 connections for ``--duration``,
over that time and the relay's catching up after it.

A row per ``--soak-window`` minutes, the first one the warm-up: the rate, p50 / p99 (from when
each request was due), per worker its RSS, open connections and file descriptors, the relay's
backlog, the sessions stored and what retention deleted, the 5xx. At the end, once every
journey is over and the relay has drained: whether every webhook answered ``accepted`` reached
the partner once, and every delivery still recorded did too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import multiprocessing
import os
import re
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from . import client, db, mix, servers
from .common import Run, http, run_async, say
from .pacer import Pacer, Tally
from .wrk import CONNECTIONS, Monitor, connections_by_process, wait_for_quiet

DAY = 86_400
RETENTION = (60.0, 300.0)  # seconds, at least and at most: half a window between
LEAD = 5.0  # seconds between planning the first journeys and the first being due
AHEAD = 5  # seconds of journeys planned (signed) ahead of time
CAPACITY_GUESS = 3000  # requests a second to plan for when measuring the capacity
_DELETED = re.compile(rb"retention: deleted (\d+)")
TRACING = Path(__file__).resolve().parent / "tracing"  # its sitecustomize.py, for --soak-trace
GREW_SHOWN = 12  # lines, of those whose allocations grew most


class Sampler:
    """What the server holds, read from outside: per worker (RSS, descriptors, connections),
    the relay's backlog and the sessions stored (from the database), and what retention
    deleted since the last sample (from its log)."""

    def __init__(self, server: servers.Server, database_url: str) -> None:
        self.server, self.database_url, self.log_read = server, database_url, 0

    def workers(self) -> list[int]:
        """uvicorn's worker processes: the server's children that multiprocessing spawned."""
        found = []
        for pid in self.server.pids()[1:]:
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return sorted(found)

    def sample(self) -> dict[str, Any]:
        connections = connections_by_process(str(self.server.port))
        workers = {}
        for pid in self.workers():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                rss, anonymous, files = (
                    int(status.split(f"{field}:")[1].split()[0]) * 1024
                    for field in ("VmRSS", "RssAnon", "RssFile")
                )
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                workers[str(pid)] = {
                    "rss": rss,
                    "rss_anonymous": anonymous,  # the heap: Python's, SQLite's, the threads'
                    "rss_files": files,  # files mapped: SQLite's WAL index, the metrics' files
                    "fds": fds,
                    "connections": connections.get(pid, 0),
                }
        pending = "SELECT count(*) AS n FROM deliveries WHERE state = 'pending'"
        with self.server.log.open("rb") as log:
            log.seek(self.log_read)
            written = log.read()
        self.log_read += len(written)
        return {
            "workers": workers,
            "backlog": db.query(self.database_url, pending)[0]["n"],
            "sessions": db.query(self.database_url, "SELECT count(*) AS n FROM sessions")[0]["n"],
            "deleted": sum(int(count) for count in _DELETED.findall(written)),
        }


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)] if ordered else 0.0


def _row(tally: Tally, seconds: float) -> dict[str, Any]:
    """One window's figures from what its requests met."""
    took = [ms for kind in tally.took_ms.values() for ms in kind]
    return {
        "seconds": round(seconds, 1),
        "rate": round(len(took) / seconds, 1),
        "by_kind": {kind: len(values) for kind, values in sorted(tally.took_ms.items())},
        "p50_ms": round(_percentile(took, 0.5), 1),
        "p99_ms": round(_percentile(took, 0.99), 1),
        "late_p99_ms": round(_percentile(tally.late_ms, 0.99), 1),
        "held": dict(tally.held),
        "server_errors": tally.server_errors(),
        "failed": dict(tally.failed),
    }


def _starts(rate: float, wall: float, second: int) -> dict[int, float]:
    """The journeys due in ``second`` of the soak (one every 1/rate s), by number: when."""
    first, last = math.ceil(second * rate), math.ceil((second + 1) * rate)
    return {number: wall + number / rate for number in range(first, last)}


async def _feed(run: Run, pacer: Pacer, rate: float, wall: float, seconds: int) -> None:
    """Journeys planned (signed) in a process of their own ``AHEAD`` seconds before they are
    due, and handed to the pacer, for ``seconds`` of the soak."""
    loop, credentials, port = asyncio.get_running_loop(), run.credentials, pacer.port
    base = loop.time() + (wall - time.time())  # the loop's clock at ``wall``
    signing = credentials.private_pem(), credentials.secret
    planning = partial(mix.plan, *signing, _ttl(run), port, "ps_soak_")
    # Spawned, not forked: this process runs an event loop and threads.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as signer:
        batches = collections.deque(
            loop.run_in_executor(signer, planning, _starts(rate, wall, second))
            for second in range(min(AHEAD, seconds))
        )
        for second in range(seconds):
            for journey in await batches.popleft():
                pacer.start(journey, base + (journey.start - wall))
            if second + AHEAD < seconds:
                starts = _starts(rate, wall, second + AHEAD)
                batches.append(loop.run_in_executor(signer, planning, starts))
            await asyncio.sleep(max(base + second + 1 - AHEAD / 2 - loop.time(), 0))


async def _windows(run: Run, server: servers.Server, rate: float) -> dict[str, Any]:
    """The soak itself: journeys at ``rate`` requests a second, a row per window."""
    settings, loop = run.settings, asyncio.get_running_loop()
    total, window = settings.soak_minutes * 60, settings.soak_window * 60
    journeys = rate / mix.requests_per_journey()
    pacer, sampler = Pacer(server.port), Sampler(server, _database_url(server))
    wall = time.time() + LEAD
    feeding = asyncio.create_task(_feed(run, pacer, journeys, wall, math.ceil(total)))
    begun, rows = loop.time() + LEAD, list[dict[str, Any]]()
    say(f"soak: {rate:,.0f} requests a second ({journeys:,.1f} journeys) for {total / 60:g} min")
    for index in range(math.ceil(total / window)):
        ends, others = min((index + 1) * window, total), Monitor(run.roots)
        await asyncio.sleep(max(begun + ends - loop.time(), 0))
        if feeding.done():
            feeding.result()  # the planning failed: say why now, not after the soak
        tally, pacer.tally = pacer.tally, Tally()
        row = _row(tally, ends - index * window) | await asyncio.to_thread(sampler.sample)
        row |= others.stop()  # what processes not the run's used of the CPUs meanwhile
        rows.append(row | {"minutes": [round(index * window / 60, 2), round(ends / 60, 2)]})
        rows[-1]["accepted"] = tally.accepted
        rss = "/".join(
            f"{w['rss'] / 1e6:.0f} ({w['rss_anonymous'] / 1e6:.0f} anon)"
            for w in row["workers"].values()
        )
        say(
            f"soak window {index + 1}: {row['rate']:,.0f} req/s, p50 {row['p50_ms']} p99"
            f" {row['p99_ms']} ms, RSS {rss} MB, backlog {row['backlog']}, 5xx"
            f" {row['server_errors']}, failed {sum(row['failed'].values())}"
        )
    await feeding
    finished = await pacer.idle(timeout=60 + 2 * mix.WAIT)
    pacer.close()
    tail = _row(pacer.tally, 1.0) | {"accepted": pacer.tally.accepted, "finished": finished}
    return {"rate_asked": rate, "journeys_per_second": journeys, "rows": rows, "after": tail}


async def _closed_loop(port: int, journeys: list[mix.Journey], seconds: float) -> float:
    """The mix's requests (the held ones aside) in a closed loop of ``CONNECTIONS``: how many
    a second were answered."""
    queue = sorted(
        (
            (journey.number / 100 + planned.at, planned.data)
            for journey in journeys
            for planned in journey.requests
        ),
        reverse=True,
    )
    loop, answered = asyncio.get_running_loop(), [0]
    deadline = loop.time() + seconds

    async def work() -> None:
        pool = client.Pool(port)
        while queue and loop.time() < deadline:
            with contextlib.suppress(OSError):  # not answered: not counted
                await pool.ask(queue.pop()[1])
                answered[0] += 1
        pool.close()

    began = loop.time()
    await asyncio.gather(*(work() for _ in range(CONNECTIONS)))
    if not queue:
        say("soak: the capacity's requests ran out before its time; the figure is a floor")
    return answered[0] / (loop.time() - began)


def _capacity(run: Run, server: servers.Server) -> float:
    """Requests a second of the mix the bridge answers in a closed loop (bench/wrk.py's 64
    connections), the client on the same cores, and delivers on: the loop's rate over its time
    and the relay's catching up after."""
    seconds, credentials = run.settings.duration, run.credentials
    count = math.ceil(CAPACITY_GUESS * seconds / mix.requests_per_journey())
    say(f"soak: measuring the capacity, {count:,} journeys in a closed loop for {seconds:g} s")
    chunks = [range(start, min(start + 500, count)) for start in range(0, count, 500)]
    signing = credentials.private_pem(), credentials.secret
    planning = partial(mix.plan, *signing, _ttl(run), server.port, "ps_capacity_")
    now = time.time() + 30  # dated a little ahead: the signing takes a while
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        planned = pool.map(planning, [{number: now for number in chunk} for chunk in chunks])
        journeys = [journey for chunk in planned for journey in chunk]
    wait_for_quiet(run)
    rate = run_async(_closed_loop(server.port, journeys, seconds))
    # What the bridge sustains: a relay that cannot keep up only defers its work, so the time
    # it takes to deliver what the loop left behind counts too.
    drained = db.drain(_database_url(server))
    sustained = rate * seconds / (seconds + drained)
    say(
        f"soak: capacity {sustained:,.0f} requests a second, the relay included ({rate:,.0f}"
        f" while the loop sent, then {drained:.1f} s for the relay to catch up)"
    )
    return sustained


def _deliveries(
    database_url: str, partner: servers.Server, log: Path, accepted: list[str]
) -> dict[str, Any]:
    """Once the relay has drained: whether every webhook answered ``accepted`` reached the
    partner once (by its body), every delivery still recorded did (by its id, which retention
    may have deleted for the older ones), and none came twice."""
    drained = db.drain(database_url)
    http("GET", f"{partner.url}/count")  # flushes its log
    ids, bodies = collections.Counter[str](), collections.Counter[str]()
    for line in log.read_text().splitlines():
        message_id, digest = line.split("\t")
        ids[message_id] += 1
        bodies[digest] += 1
    rows = db.query(database_url, "SELECT message_id, state FROM deliveries")
    states = collections.Counter(row["state"] for row in rows)
    return {
        "drain_seconds": round(drained, 1),
        "accepted": len(accepted),
        "posts": sum(ids.values()),
        "recorded": len(rows),
        "states": dict(states),
        "accepted_not_received": sum(bodies[digest] == 0 for digest in accepted),
        "accepted_received_twice": sum(bodies[digest] > 1 for digest in accepted),
        "recorded_not_received": sum(ids[row["message_id"]] == 0 for row in rows),
        "ids_received_twice": sum(count > 1 for count in ids.values()),
    }


def _retention(run: Run) -> float:
    """Seconds: half a window, within ``RETENTION``, so retention deletes in every window
    after the first few."""
    return min(max(run.settings.soak_window * 30, RETENTION[0]), RETENTION[1])


def _ttl(run: Run) -> int:
    return int(_retention(run)) - 1  # a token may not outlive its session's data


def _database_url(server: servers.Server) -> str:
    return server.env["BRIDGE_DATABASE_URL"]


def soak_part(run: Run) -> dict[str, Any]:
    retention = _retention(run)
    settings = {
        "BRIDGE_RETENTION_DAYS": repr(retention / DAY),
        "BRIDGE_TOKEN_TTL": str(_ttl(run)),
        "BRIDGE_ACTION_TIMEOUT": str(_ttl(run) // 2),
        "BRIDGE_RELAY_EVENTS": "provider bridge",
    }
    traces = run.folder / "traces"
    if run.settings.soak_trace:
        traces.mkdir(exist_ok=True)
        window = str(run.settings.soak_window * 60)
        path = os.pathsep.join(filter(None, [str(TRACING), os.environ.get("PYTHONPATH")]))
        settings |= {
            "PYTHONPATH": path,
            "BENCH_TRACE_DIR": str(traces),
            "BENCH_TRACE_EVERY": window,
        }
    log = run.folder / "partner-soak.tsv"
    with contextlib.ExitStack() as stack:
        partner = stack.enter_context(servers.partner(run, log).start())
        relay_url = f"{partner.url}/smart-glocal"
        bridge = servers.bridge(
            run, run.database_url(), "bridge-soak", relay_url=relay_url, settings=settings
        )
        say(f"soak: starting the bridge ({run.settings.workers} workers, {run.settings.engine})")
        stack.enter_context(bridge.start())
        capacity = 0.0 if run.settings.soak_rate else _capacity(run, bridge)
        wait_for_quiet(run)
        found = run_async(_windows(run, bridge, run.settings.soak_rate or capacity / 2))
        found["capacity"] = capacity
        accepted = [
            digest for row in [*found["rows"], found["after"]] for digest in row.pop("accepted")
        ]
        found["deliveries"] = _deliveries(_database_url(bridge), partner, log, accepted)
    if run.settings.soak_trace:
        found["traced"] = _grew(traces, set(found["rows"][-1]["workers"]))
    return found | {"retention_seconds": retention, "engine": run.settings.engine}


def _grew(folder: Path, workers: set[str]) -> dict[str, Any]:
    """Per worker, from its snapshots (one a window, the first at the end of the second): the
    bytes its Python allocations made since the first window held at each, and the lines whose
    allocations grew most from the first snapshot to the last."""
    found: dict[str, Any] = {}
    for pid in sorted(workers):
        snapshots = [
            tracemalloc.Snapshot.load(str(path)) for path in sorted(folder.glob(f"{pid}-*"))
        ]
        if len(snapshots) < 2:
            continue
        held = [
            sum(stat.size for stat in snapshot.statistics("filename")) for snapshot in snapshots
        ]
        grew = snapshots[-1].compare_to(snapshots[0], "lineno")[:GREW_SHOWN]
        say(f"soak: worker {pid} held {' / '.join(f'{size / 1e6:.1f}' for size in held)} MB")
        for stat in grew:
            grown = f"{stat.size_diff / 1e3:+,.0f} KB, {stat.count_diff:+,} blocks"
            say(f"soak:   {grown}: {stat.traceback}")
        found[pid] = {
            "held_mb": [round(size / 1e6, 1) for size in held],
            "grew": [[str(stat.traceback), stat.size_diff, stat.count_diff] for stat in grew],
        }
    return found
