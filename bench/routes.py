"""The routes, servers, relay and limit parts, measured in one pass over the servers they need:

- routes: the bridge under ``serve`` with the relay on (to bench/partner.py) against the twin;
- limit: that bridge's page and status routes against bench/limit.py, a bare ASGI callable
  under the same server sending the bytes the bridge sent (the limit of this server);
- servers: the bridge with the relay off under ``serve`` against it under Hypercorn;
- relay: the webhook route of those two bridges under ``serve``, relay on against off.

Round after round each route is measured on one server after the other, each going first in
turn, so the pairs compared are minutes apart at most (a shared machine's load drifts). Every
webhook sent to a bridge is a new, uniquely signed body for a new session: each round signs a
pool, sized from a warm-up, and sends it to every server (each bridge has its own database).
With the relay on, the backlog of deliveries is drained before each measurement and read from
the database after.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.tokens import Tokens

from . import client, db, limit, profile, servers
from .common import Run, http, run_async, say, sign_webhooks, webhook_body
from .wrk import Result, measure, median, wait_for_quiet, wrk

ROUTES = ("pay", "status", "webhook")
LABELS = {  # the order the rounds measure them in
    "pay": "GET /pay/{token}",
    "kept": "GET /pay/{token}, kept pages",  # the limit part's: KEPT_SESSIONS
    "status": "GET /api/v1/status/{token}",
    "webhook": "POST /webhooks/smart-glocal",
}
# Customers the GET routes cycle through: the bridge answers a token's status 120 times a
# minute (a burst, then 2 a second), as in production, so the load is spread over enough
# customers to measure no 429s.
VIEW_SESSIONS = 5000
# The first of those whose pages the limit part reads: few enough that the first warm-up
# builds every one in every worker, so the page measured is the kept page.
KEPT_SESSIONS = 200
TOKEN_TTL = 21600
WEBHOOK = "/webhooks/smart-glocal"


@dataclass
class Member:
    """A server in the comparison, and what it measured."""

    server: servers.Server
    routes: tuple[str, ...]
    database_url: str = ""  # none: the twin
    relay: bool = False
    paths: dict[str, Path] = field(default_factory=dict)  # the GET routes' files of paths
    results: dict[str, list[Result]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)  # the webhooks of each round

    def drain(self) -> None:
        if self.relay:
            db.drain(self.database_url)


@dataclass
class Pools:
    """One pool of signed webhooks per round and attempt, sent to every server."""

    run: Run
    size: int
    made: dict[str, Path] = field(default_factory=dict)

    def get(self, prefix: str) -> Path:
        """Webhooks of sessions ``prefix…`` (ids as long as a provider's)."""
        if prefix not in self.made:
            say(f"signing {self.size:,} webhooks")
            ids = [f"{prefix}{number:0{27 - len(prefix)}d}" for number in range(self.size)]
            path = self.run.folder / f"{prefix}webhooks.txt"
            self.made[prefix] = sign_webhooks(self.run.credentials, ids, path)
        return self.made[prefix]


def _prepare(run: Run, member: Member) -> tuple[bytes, bytes]:
    """One session's token minted through the partner API, then ``VIEW_SESSIONS`` more
    sessions; each gets a signed ``action_required``, and their tokens are minted with the
    bridge's own token code and secret (the partner API is rate limited). The first session's
    page must be the bank form: it and its status answer are returned, for the twin to match."""
    url, name = member.server.url, member.server.name
    first, auth = "ps_view_first", {"Authorization": f"Bearer {run.credentials.api_key}"}
    status, minted = http("POST", f"{url}/api/v1/sessions/{first}/tokens", headers=auth)
    if status != 201:
        raise RuntimeError(f"{name}: minting a token answered {status}: {minted[:200]!r}")
    ids = [first] + [f"ps_view_{number:05d}" for number in range(VIEW_SESSIONS)]
    if not (signed := run.folder / "views.txt").exists():  # the same for every bridge
        sign_webhooks(run.credentials, ids, signed)
    requests = list(client.webhooks(signed, member.server.port).values())
    answers = run_async(client.send_all(member.server.port, requests))
    if refused := {answer.status for answer in answers} - {200}:
        raise RuntimeError(f"{name}: webhooks answered {refused} while preparing")
    token = json.loads(minted)["token"]
    _, page = http("GET", f"{url}/pay/{token}")
    _, answer = http("GET", f"{url}/api/v1/status/{token}")
    if b'id="bank-form"' not in page or b'"action_required"' not in answer:
        raise RuntimeError(f"{name}: a prepared session shows no bank form: {answer[:200]!r}")
    tokens = Tokens([run.credentials.secret], TOKEN_TTL, time.time)
    minted_tokens = [tokens.mint(session_id).token for session_id in ids[1:]]
    for route, path, count in (("pay", "/pay/", None), ("kept", "/pay/", KEPT_SESSIONS)):
        member.paths[route] = run.folder / f"{name}-{route}.txt"
        lines = (f"{path}{token}\n" for token in minted_tokens[:count])
        member.paths[route].write_text("".join(lines))
    member.paths["status"] = run.folder / f"{name}-status.txt"
    status_lines = (f"/api/v1/status/{token}\n" for token in minted_tokens)
    member.paths["status"].write_text("".join(status_lines))
    return page, answer


def _calibrate(run: Run, member: Member) -> int:
    """A warm-up with webhooks of its own; its rate sizes the pools so that no measurement goes
    round its pool (a duplicate writes nothing)."""
    ids = [f"ps_{member.server.name}_warm_{number:05d}" for number in range(3000)]
    warm = sign_webhooks(run.credentials, ids, run.folder / f"{member.server.name}-warm.txt")
    wait_for_quiet(run)
    url, seconds = member.server.url + WEBHOOK, max(run.settings.warmup, 2)
    warmed = wrk(run, url, seconds, "bodies", warm)
    say(f"{member.server.name}: warm-up {warmed.rate:,.0f} webhooks/s")
    member.drain()
    return math.ceil(warmed.rate * run.settings.duration * 2.5) + 2000  # warm-ups run slower


def _measure(run: Run, member: Member, route: str, round_: int, pools: Pools) -> None:
    label = f"{member.server.name}: {LABELS[route]}"
    if route != "webhook":
        paths = member.paths[route]
        result = measure(run, label, member.server.url, "paths", lambda _: paths, round_ == 0)
    else:

        def pool(attempt: int) -> Path:
            member.drain()  # the last measurement's backlog goes first
            return pools.get(f"ps_r{round_}a{attempt}_")

        warmup = not member.database_url and round_ == 0  # bridges: _calibrate warmed them
        result = measure(run, label, member.server.url + WEBHOOK, "bodies", pool, warmup)
    member.results.setdefault(route, []).append(result)
    if route == "webhook" and member.database_url:
        prefix, url = f"ps_r{round_}a{result.attempt}_", member.database_url
        check = {"round": round_, "pool": pools.size, "requests": result.requests}
        check |= {"stored": db.count(url, "webhooks", prefix), "wrapped": result.wrapped}
        if result.wrapped:
            run.note(f"{label}: the pool ran out ({pools.size:,}); duplicates were measured")
        if member.relay:
            check |= {"drain_wait_s": round(db.drain(url), 2)} | db.relay_figures(url, prefix)
            say(f"{label}: relayed {check.get('delivered_while_receiving')} while receiving")
        member.checks.append(check)


def _profile(run: Run, member: Member, route: str, pools: Pools) -> None:
    """The route again under py-spy (bench/profile.py)."""
    url, script, seconds = member.server.url, "paths", run.settings.duration
    if route == "webhook":
        url, script, paths = url + WEBHOOK, "bodies", pools.get("ps_profile_")
    else:
        paths = member.paths[route]
    say(f"{member.server.name}: {LABELS[route]} again, under py-spy")
    name, pids = f"{member.server.name}-{route}", member.server.pids()
    profile.record(pids, seconds, name, lambda: wrk(run, url, seconds, script, paths))
    member.drain()


def _bridge_routes(only: tuple[str, ...]) -> tuple[str, ...]:
    """The routes the bridge with the relay on is measured on, for the parts chosen."""
    wanted = set(ROUTES) if "routes" in only else set()
    wanted |= {"webhook"} if {"relay", "engines"} & set(only) else set()
    wanted |= set(limit.PREFIXES) if "limit" in only else set()
    return tuple(route for route in LABELS if route in wanted)


def _first_paths(member: Member) -> dict[str, str]:
    """The first path of each GET route's file: a page, a status answer."""
    return {route: member.paths[route].read_text().split("\n", 1)[0] for route in limit.PREFIXES}


def _limit(run: Run, bridge: Member) -> Member:
    """bench/limit.py under serve's server, sending what the bridge sent for the first path
    of each GET route (its page, kept from then on, and its status answer)."""
    found = _first_paths(bridge).items()
    answers = {route: limit.capture(bridge.server.url, path) for route, path in found}
    if {answer.status for answer in answers.values()} != {200}:
        raise RuntimeError(f"the bridge answered {answers} to the limit's capture")
    return Member(limit.server(run, answers), tuple(limit.PREFIXES), paths=bridge.paths)


def routes_part(run: Run) -> dict[str, Any]:
    """Whichever of routes, servers and relay the run measures, in one pass."""
    only, settings = run.settings.only, run.settings
    other = "postgresql" if settings.engine == "sqlite" else "sqlite"  # the engines part's
    with contextlib.ExitStack() as stack:
        members: list[Member] = []

        def add(member: Member) -> Member:
            engine = member.database_url.partition(":")[0] or "no database"
            say(f"starting {member.server.name} ({settings.workers} workers, {engine})")
            stack.enter_context(member.server.start())
            members.append(member)
            return member

        partner, sizes = None, {}
        if routes := _bridge_routes(only):
            partner = stack.enter_context(servers.partner(run).start())
            url, relay_url = run.database_url(), f"{partner.url}/smart-glocal"
            bridge = servers.bridge(run, url, "bridge", relay_url=relay_url)
            add(Member(bridge, routes, url, relay=True))
        if "engines" in only:  # its own partner: each bridge's deliveries are counted apart
            heard = stack.enter_context(servers.partner(run).start())
            url, relay_url = run.database_url(other), f"{heard.url}/smart-glocal"
            name = f"bridge-{other}"
            add(
                Member(
                    servers.bridge(run, url, name, relay_url=relay_url),
                    ("webhook",),
                    url,
                    relay=True,
                )
            )
        if "servers" in only or "relay" in only:
            url = run.database_url()
            plain = servers.bridge(run, url, "bridge-norelay")
            add(Member(plain, ROUTES if "servers" in only else ("webhook",), url))
        if "servers" in only:
            url = run.database_url()
            add(Member(servers.bridge(run, url, "hypercorn", hypercorn=True), ROUTES, url))
        views = {m.server.name: _prepare(run, m) for m in members if "status" in m.routes}
        if "routes" in only:
            page, answer = views["bridge"]
            twin_server = servers.twin(run, len(page), answer)
            twin = add(Member(twin_server, ROUTES, paths=members[0].paths))  # the bridge's
            path = members[0].paths["pay"].read_text().split("\n", 1)[0]
            status, twin_page = http("GET", twin.server.url + path)
            if status != 200:
                raise RuntimeError(f"the twin's page answered {status}")
            sizes = {"bridge_page": len(page), "twin_page": len(twin_page)}
            sizes |= {"status_answer": len(answer)}
        if "limit" in only:  # checked to answer as the bridge does, bytes for bytes
            bare = add(_limit(run, members[0]))
            limit.check(bare.server, members[0].server.url, _first_paths(members[0]))
        sending = [m for m in members if m.database_url and "webhook" in m.routes]
        pools = Pools(run, max((_calibrate(run, m) for m in sending), default=0))
        sizes["webhook_body"] = len(webhook_body(f"ps_r0a0_{0:019d}"))
        for round_ in range(settings.rounds):
            say(f"--- round {round_ + 1} of {settings.rounds}")
            for route in LABELS:
                for member in members if round_ % 2 == 0 else members[::-1]:
                    if route in member.routes:
                        _measure(run, member, route, round_, pools)
                        if settings.profile and round_ == 0 and member is members[0]:
                            _profile(run, member, route, pools)
        received = int(http("GET", f"{partner.url}/count")[1]) if partner else 0
    by_name = {member.server.name: member for member in members}
    found = {name: {r: median(rs) for r, rs in m.results.items()} for name, m in by_name.items()}
    parts: dict[str, Any] = {}
    if "routes" in only:
        url = by_name["bridge"].database_url
        sizes["log_per_webhook"] = db.table_bytes(url, "webhooks") // db.count(url, "webhooks")
        bridge_routes = {route: found["bridge"][route] for route in ROUTES}
        parts["routes"] = {"bridge": bridge_routes, "twin": found["twin"], "sizes": sizes}
        parts["routes"]["checks"] = by_name["bridge"].checks
    if "limit" in only:
        fast = {route: found["bridge"][route] for route in limit.PREFIXES}
        parts["limit"] = {"bridge": fast, "limit": found["limit"]}
    if "servers" in only:
        parts["servers"] = {"serve": found["bridge-norelay"], "hypercorn": found["hypercorn"]}
    if "engines" in only:
        parts["engines"] = {
            settings.engine: {"webhook": found["bridge"]["webhook"]},
            other: {"webhook": found[f"bridge-{other}"]["webhook"]},
        }
    if "relay" in only:
        on, off = found["bridge"]["webhook"], found["bridge-norelay"]["webhook"]
        parts["relay"] = {"relay on": {"webhook": on}, "relay off": {"webhook": off}}
        parts["relay"] |= {
            "checks": by_name["bridge"].checks,
            "partner_received": received,  # every POST, the warm-ups' too
            "deliveries_recorded": db.count(by_name["bridge"].database_url, "deliveries"),
            "engine": settings.engine,
        }
    return parts
