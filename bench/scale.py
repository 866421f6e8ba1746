"""Status lookups with 1,000 and with 1,000,000 sessions stored, on each engine asked for.

The bridge makes its tables and stores one session from a real ``action_required`` (a 3-D
Secure step of realistic size); the other sessions are copies of its row, bulk-loaded under
provider-like ids in no order, as they would arrive.
"""

from __future__ import annotations

import base64
import functools
import random
import time
from typing import Any

from app.tokens import Tokens
from tests.payloads import redirect

from . import db, servers
from .common import Run, http, say, webhook_body
from .routes import TOKEN_TTL
from .wrk import measure, median

SMALL = 1_000
SPREAD = 10_000  # distinct tokens asked for at both sizes (sessions at the large one)
BANK = "https://acs.issuer-bank.example/3ds/v1/challenge"


def _template(run: Run, database_url: str) -> str:
    """A session stored by the bridge from a signed ``action_required``: a PaReq of 1,200
    base64 characters (they run from a few hundred to a few thousand), an MD of 36, and a bank
    URL with a query string of its own."""
    pareq = base64.b64encode(random.Random(3230).randbytes(900)).decode()
    step = redirect(
        url=f"{BANK}?txid=8f1e0c2a-6b1d-4c55-9a7e-2f",
        base_url=BANK,
        qs={"txid": "8f1e0c2a-6b1d-4c55-9a7e-2f"},
        params={"PaReq": pareq, "MD": "0b9f5b2e-3f4c-4d8e-a8c1-5f0e2d7c9a41"},
    )
    session_id = f"ps_{random.Random(1).getrandbits(96):024x}"
    body = webhook_body(session_id, interaction=step)
    headers = {"Content-Type": "application/json", "X-PARTNER-SIGN": run.credentials.signed(body)}
    with servers.bridge(run, database_url, "scale-schema").start() as bridge:
        status, answer = http("POST", bridge.url + "/webhooks/smart-glocal", body, headers)
    if status != 200:
        raise RuntimeError(f"the template's webhook answered {status}: {answer[:200]!r}")
    return session_id


def _lookups(run: Run, database_url: str, ids: list[str], label: str) -> dict[str, Any]:
    """The status route over ``SPREAD`` tokens of ``ids``, minted seconds apart when there are
    fewer sessions (a token gets 120 answers a minute)."""
    now, lines = time.time(), []
    for back in range(max(SPREAD // len(ids), 1)):
        tokens = Tokens([run.credentials.secret], TOKEN_TTL, functools.partial(float, now - back))
        lines += [f"/api/v1/status/{tokens.mint(session_id).token}\n" for session_id in ids]
    random.Random(5).shuffle(lines)
    paths = run.folder / f"scale-{label}.txt"
    paths.write_text("".join(lines))
    results, shown = [], f"{label}: status over {len(ids):,} sessions ({len(lines):,} tokens)"
    with servers.bridge(run, database_url, f"bridge-{label}").start() as bridge:
        for round_ in range(run.settings.rounds):
            results.append(measure(run, shown, bridge.url, "paths", lambda _: paths, round_ == 0))
    return median(results) | {"tokens": len(lines)}


def _size(database_url: str) -> dict[str, int]:
    count = db.count(database_url, "sessions")
    return {"sessions": count, "table_bytes": db.table_bytes(database_url, "sessions")}


def _engine(run: Run, engine: str) -> dict[str, Any]:
    sessions = run.settings.sessions
    database_url = run.database_url(engine)
    template = _template(run, database_url)
    generator = random.Random(20240527)
    ids = [template] + [f"ps_{generator.getrandbits(96):024x}" for _ in range(sessions - 1)]
    db.copy_session(database_url, template, ids[1:SMALL])
    small = _lookups(run, database_url, ids[:SMALL], f"{engine}-{SMALL}")
    small_size = _size(database_url)
    say(f"{engine}: inserting {sessions - SMALL:,} more sessions")
    started = time.monotonic()
    db.copy_session(database_url, template, ids[SMALL:])
    load_seconds = time.monotonic() - started
    large_size = _size(database_url)
    per_session = large_size["table_bytes"] / large_size["sessions"]
    say(f"{engine}: {sessions:,} sessions in {load_seconds:.0f} s, {per_session:,.0f} bytes each")
    sample = random.Random(7).sample(ids, min(SPREAD, sessions))
    large = _lookups(run, database_url, sample, f"{engine}-{sessions}")
    return {
        "small": {"sessions": SMALL, **small, "size": small_size},
        "large": {"sessions": sessions, **large, "size": large_size},
        "ratio": large["rate"] / small["rate"] if small["rate"] else 0.0,
        "load_seconds": round(load_seconds, 1),
    }


def scale_part(run: Run) -> dict[str, Any]:
    return {engine: _engine(run, engine) for engine in run.settings.scale_engines}
