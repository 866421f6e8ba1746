"""The three routes, on the bridge and on its bare twin, and the bridge under Hypercorn."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.signature import sign
from app.tokens import Tokens

from . import client, load, profile, servers, wrk
from .context import Context, run_async, say
from .data import Prepared, http, prepare_session, signed_webhooks, webhook_body
from .storage import count_webhooks, webhook_bytes

ROUTES = ("pay", "status", "webhook")
LABELS = {
    "pay": "GET /pay/{token}",
    "status": "GET /api/v1/status/{token}",
    "webhook": "POST /webhooks/smart-glocal",
}
# Customers the GET routes cycle through. The bridge limits each token to 120 status answers a
# minute (a burst of 120, then 2 a second), as production does, so the load is spread over as
# many customers as it takes to stay under that: realistic, and no 429s measured.
VIEW_SESSIONS = 5000
TOKEN_TTL = 21600


@dataclass
class Views:
    """Files of paths for the GET routes, and the page and answer the twin must match."""

    pay: Path
    status: Path
    prepared: Prepared


def prepare_views(ctx: Context, server: servers.Server, name: str) -> Views:
    """One session through the partner API and a webhook (checked: the bank form renders), then
    ``VIEW_SESSIONS`` more with a signed ``action_required`` each; their tokens are minted with
    the bridge's own token code and secret, as the partner API would (it is rate limited)."""
    prepared = prepare_session(server.url, ctx.credentials)
    key = ctx.credentials.private_key()
    ids = [f"ps_view_{name}_{number:05d}" for number in range(VIEW_SESSIONS)]
    requests = []
    for session_id in ids:
        body = webhook_body(session_id)
        requests.append(
            client.post(
                "/webhooks/smart-glocal",
                server.port,
                body,
                {"Content-Type": "application/json", "X-PARTNER-SIGN": sign(key, body)},
            )
        )
    answers = run_async(client.send_all(server.port, requests, connections=16))
    refused = [answer.status for answer in answers if answer.status != 200]
    if refused or len(answers) != len(requests):
        raise RuntimeError(f"preparing sessions: {len(refused)} webhooks refused: {refused[:5]}")
    tokens = Tokens([ctx.credentials.secret], TOKEN_TTL, time.time)
    minted = [tokens.mint(session_id).token for session_id in ids]
    pay = ctx.folder / f"{name}-pay-paths.txt"
    status = ctx.folder / f"{name}-status-paths.txt"
    pay.write_text("".join(f"/pay/{token}\n" for token in minted))
    status.write_text("".join(f"/api/v1/status/{token}\n" for token in minted))
    return Views(pay, status, prepared)


def measure(
    ctx: Context,
    url: str,
    script: str,
    args: tuple[str, ...],
    *,
    warmup: bool = True,
    fresh: Callable[[int], tuple[str, ...]] | None = None,
) -> wrk.Result:
    """A warm-up (discarded), then the measurement; again (up to ``ctx.attempts`` in all) when
    other processes took CPU meanwhile, keeping the least disturbed. ``fresh(attempt)`` gives
    the arguments of a new attempt (a new pool of webhooks)."""
    best: wrk.Result | None = None
    for attempt in range(ctx.attempts):
        if best is not None:
            say(f"  other processes used {best.other_cores:.2f} cores meanwhile; measuring again")
            if fresh is not None:
                args = fresh(attempt)
        load.wait_for_quiet(ctx.quiet_wait)
        if warmup and ctx.warmup > 0:
            wrk.run(url, ctx.warmup, script=script, args=args, connections=ctx.connections)
        result = wrk.run(url, ctx.duration, script=script, args=args, connections=ctx.connections)
        if best is None or result.other_cores < best.other_cores:
            best = dataclasses.replace(result, attempt=attempt)
        if result.other_cores < load.DISTURBED:
            break
    assert best is not None
    return best


def _paths_args(path: Path) -> tuple[str, ...]:
    return (str(path), str(wrk.THREADS))


def calibrate_webhooks(ctx: Context, server: servers.Server, name: str) -> int:
    """A warm-up with webhooks of its own; its rate sizes each round's pool of unique bodies so
    that no measurement goes round its pool (a duplicate does not write)."""
    url = f"{server.url}/webhooks/smart-glocal"
    load.wait_for_quiet(ctx.quiet_wait)
    warm_count = 3000
    say(f"{server.name}: signing {warm_count} webhooks for the warm-up")
    warm = signed_webhooks(
        ctx.credentials, f"ps_{name}_warm_", warm_count, ctx.folder / f"{name}-warm.txt"
    )
    warmed = wrk.run(
        url,
        max(ctx.warmup, 2),
        script="bodies",
        args=_paths_args(warm),
        connections=ctx.connections,
    )
    say(f"{server.name}: warm-up {warmed.rate:,.0f} webhooks/s")
    return math.ceil(warmed.rate * ctx.duration * 2.5) + 2000  # warm-ups run slower


def measure_webhooks(
    ctx: Context, server: servers.Server, name: str, database_url: str, needed: int, round_: int
) -> tuple[wrk.Result, Path, dict[str, Any]]:
    """One round: ``needed`` new signed webhooks, each a new session, each sent once."""
    url = f"{server.url}/webhooks/smart-glocal"
    pools: dict[int, Path] = {}

    def fresh(attempt: int) -> tuple[str, ...]:
        say(f"{server.name}: signing {needed} webhooks")
        started = time.monotonic()
        pools[attempt] = signed_webhooks(
            ctx.credentials,
            f"ps_{name}_r{round_}a{attempt}_",
            needed,
            ctx.folder / f"{name}-webhooks-{round_}-{attempt}.txt",
        )
        say(f"{server.name}: signed in {time.monotonic() - started:.1f} s")
        return _paths_args(pools[attempt])

    first = fresh(0)
    say(f"{server.name}: {LABELS['webhook']} for {ctx.duration:.0f} s")
    result = measure(ctx, url, "bodies", first, warmup=False, fresh=fresh)
    # The kept attempt's webhooks: each answered request should have stored one.
    stored = count_webhooks(database_url, f"ps_{name}_r{round_}a{result.attempt}_")
    check = {
        "pool": needed,
        "stored": stored,
        "requests": result.requests,
        "wrapped": result.wrapped,
        "bytes_per_webhook": round(webhook_bytes(database_url)),
    }
    if result.wrapped:
        ctx.note(f"{server.name}: the webhook pool ran out ({needed}); duplicates were measured")
    _say_result(server.name, "webhook", result, f"stored {stored} new webhooks")
    if ctx.profile is not None and server.name == "bridge" and round_ == 0:
        more = signed_webhooks(
            ctx.credentials, f"ps_{name}_profile_", needed, ctx.folder / f"{name}-profile.txt"
        )
        say(f"{server.name}: {LABELS['webhook']} again, under py-spy")
        profile.record(
            server.pids(),
            ctx.duration,
            ctx.profile / f"{server.name}-webhook",
            lambda: wrk.run(
                url,
                ctx.duration,
                script="bodies",
                args=_paths_args(more),
                connections=ctx.connections,
            ),
        )
    return result, pools[result.attempt], check


def median(results: list[wrk.Result]) -> dict[str, Any]:
    """The round with the median rate (its latencies with it), and every round's rate."""
    ordered = sorted(results, key=lambda result: result.rate)
    kept = ordered[(len(ordered) - 1) // 2]
    return {**kept.as_dict(), "rounds": [round(result.rate, 1) for result in results]}


def _say_result(name: str, route: str, result: wrk.Result, extra: str = "") -> None:
    errors = f", {result.error_count} errors {result.errors}" if result.error_count else ""
    say(
        f"{name}: {LABELS[route]}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} ms,"
        f" p99 {result.p99_ms:.1f} ms{errors}{'; ' + extra if extra else ''}"
    )


def _bridge(ctx: Context, kind: str) -> tuple[servers.Server, str]:
    database_url = ctx.database_url()
    env = ctx.bridge_env(database_url)
    if kind == "uvicorn":
        return servers.bridge_uvicorn(env, ctx.workers, ctx.folder), database_url
    return servers.bridge_hypercorn(env, ctx.worker_count, ctx.folder), database_url


def side_by_side(ctx: Context, twin: bool, hypercorn: bool) -> dict[str, Any]:
    """The bridge under ``serve`` and, running beside it, its twin and/or the bridge under
    Hypercorn; each route is measured on one server after the other, so that the pairs compared
    are measured close together in time (a shared machine's load drifts)."""
    with contextlib.ExitStack() as stack:
        started: dict[str, tuple[servers.Server, str | None, Views | None]] = {}
        for kind in ("uvicorn", "hypercorn") if hypercorn else ("uvicorn",):
            server, database_url = _bridge(ctx, kind)
            say(f"starting the bridge under {kind} ({ctx.worker_count} workers, {ctx.engine})")
            stack.enter_context(server.start())
            started[kind] = (server, database_url, prepare_views(ctx, server, kind))
        views = started["uvicorn"][2]
        assert views is not None
        page = b""
        if twin:
            server = servers.twin_uvicorn(
                {
                    "BENCH_TWIN_PAGE_BYTES": str(len(views.prepared.page)),
                    "BENCH_TWIN_STATUS": views.prepared.status_answer.decode(),
                },
                ctx.worker_count,
                ctx.folder,
            )
            say(f"starting the bare twin under uvicorn ({ctx.worker_count} workers)")
            stack.enter_context(server.start())
            first = views.pay.read_text().split("\n", 1)[0]
            status, page = http("GET", f"{server.url}{first}")
            if status != 200:
                raise RuntimeError(f"the twin's page answered {status}")
            started["twin"] = (server, None, views)

        results: dict[str, dict[str, list[wrk.Result]]] = {
            kind: {route: [] for route in ROUTES} for kind in started
        }
        checks: dict[str, dict[str, Any]] = {}
        needed = {
            kind: calibrate_webhooks(ctx, server, kind)
            for kind, (server, database_url, _) in started.items()
            if database_url is not None
        }
        for round_ in range(ctx.rounds):
            if ctx.rounds > 1:
                say(f"--- round {round_ + 1} of {ctx.rounds}")
            for route in ("pay", "status"):
                for kind, (server, _, own_views) in started.items():
                    assert own_views is not None
                    paths = own_views.pay if route == "pay" else own_views.status
                    say(f"{server.name}: {LABELS[route]} for {ctx.duration:.0f} s")
                    result = measure(
                        ctx, server.url, "paths", _paths_args(paths), warmup=round_ == 0
                    )
                    results[kind][route].append(result)
                    _say_result(server.name, route, result)
                    if ctx.profile is not None and kind == "uvicorn" and round_ == 0:
                        _profile_gets(ctx, server, route, paths)
            pool = None
            for kind, (server, database_url, _) in started.items():
                if database_url is not None:
                    result, kind_pool, checks[kind] = measure_webhooks(
                        ctx, server, kind, database_url, needed[kind], round_
                    )
                    pool = pool or kind_pool
                else:
                    assert pool is not None
                    say(f"twin: {LABELS['webhook']} (JSON parse only) for {ctx.duration:.0f} s")
                    result = measure(
                        ctx, f"{server.url}/webhooks/smart-glocal", "bodies", _paths_args(pool)
                    )
                    _say_result("twin", "webhook", result)
                results[kind]["webhook"].append(result)
    return {
        "results": {
            kind: {route: median(rounds) for route, rounds in found.items()}
            for kind, found in results.items()
        },
        "webhook_checks": checks,
        "sizes": {
            "bridge_page": len(views.prepared.page),
            "twin_page": len(page) if twin else None,
            "status_answer": len(views.prepared.status_answer),
            "webhook_body": len(webhook_body("ps_view_uvicorn_00000")),
        },
    }


def _profile_gets(ctx: Context, server: servers.Server, route: str, paths: Path) -> None:
    say(f"{server.name}: {LABELS[route]} again, under py-spy")
    profile.record(
        server.pids(),
        ctx.duration,
        ctx.profile / f"{server.name}-{route}" if ctx.profile else Path("."),
        lambda: wrk.run(
            server.url,
            ctx.duration,
            script="paths",
            args=_paths_args(paths),
            connections=ctx.connections,
        ),
    )


def routes_and_servers(ctx: Context, routes: bool, hypercorn: bool) -> dict[str, Any]:
    """The ``routes`` part (bridge and twin) and/or the ``servers`` part (uvicorn and
    Hypercorn), measured in one pass."""
    run = side_by_side(ctx, twin=routes, hypercorn=hypercorn)
    found = run["results"]
    parts: dict[str, Any] = {}
    if routes:
        parts["routes"] = {
            "bridge": found["uvicorn"],
            "twin": found["twin"],
            "sizes": run["sizes"],
            "webhook_check": run["webhook_checks"]["uvicorn"],
        }
        say("sizes: " + json.dumps(run["sizes"]))
    if hypercorn:
        parts["servers"] = {
            "uvicorn": found["uvicorn"],
            "hypercorn": found["hypercorn"],
            "webhook_check": run["webhook_checks"]["hypercorn"],
        }
    return parts
