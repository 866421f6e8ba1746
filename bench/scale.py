"""Status lookups with 1,000 and with 1,000,000 sessions stored, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time
from typing import Any

from app.tokens import Tokens

from . import servers
from .context import Context, say
from .routes import TOKEN_TTL, measure, median
from .storage import create_schema, insert_sessions, session_bytes, session_ids
from .wrk import THREADS

SMALL = 1_000
LOOKUP_TOKENS = 10_000  # distinct customers asked for at the large size, spread over all rows


def _lookups(
    ctx: Context, database_url: str, ids: list[str], label: str, per_session: int = 1
) -> dict[str, Any]:
    """Status lookups through wrk over tokens of ``ids`` (``per_session`` tokens each, minted
    seconds apart, so both sizes ask with as many distinct tokens: the bridge limits each token
    to 120 answers a minute)."""
    now = time.time()
    lines = []
    for back in range(per_session):
        tokens = Tokens([ctx.credentials.secret], TOKEN_TTL, lambda back=back: now - back)
        lines += [f"/api/v1/status/{tokens.mint(session_id).token}\n" for session_id in ids]
    random.Random(5).shuffle(lines)
    paths = ctx.folder / f"scale-{label}.txt"
    paths.write_text("".join(lines))
    server = servers.bridge_uvicorn(
        ctx.bridge_env(database_url), ctx.workers, ctx.folder, name=f"bridge-{label}"
    )
    results = []
    with server.start():
        for round_ in range(ctx.rounds):
            say(
                f"{label}: GET /api/v1/status/{{token}} over {len(ids):,} sessions"
                f" ({len(lines):,} tokens), {ctx.duration:.0f} s"
            )
            result = measure(
                ctx, server.url, "paths", (str(paths), str(THREADS)), warmup=round_ == 0
            )
            say(
                f"{label}: {result.rate:,.0f} req/s, p50 {result.p50_ms:.1f} ms,"
                f" p99 {result.p99_ms:.1f} ms"
                + (f", {result.error_count} errors {result.errors}" if result.error_count else "")
            )
            results.append(result)
    return {**median(results), "tokens": len(lines)}


def scale_engine(ctx: Context, engine: str, sessions: int, spread: int) -> dict[str, Any]:
    database_url = ctx.database_url(engine)
    create_schema(database_url)
    now = time.time()
    small_ids = session_ids(0, SMALL)
    insert_sessions(database_url, small_ids, now)
    per_session = max(spread // SMALL, 1)
    small = _lookups(ctx, database_url, small_ids, f"{engine}-{SMALL}", per_session)
    small_size = session_bytes(database_url)

    say(f"{engine}: inserting {sessions - SMALL:,} more sessions")
    started = time.monotonic()
    more_ids = session_ids(SMALL, sessions - SMALL)
    insert_sessions(database_url, more_ids, now)
    load_seconds = time.monotonic() - started
    large_size = session_bytes(database_url)
    say(
        f"{engine}: {large_size['sessions']:,} sessions in {load_seconds:.0f} s, "
        f"{large_size['table_bytes'] / large_size['sessions']:,.0f} bytes each"
    )
    sample = random.Random(7).sample(small_ids + more_ids, min(spread, sessions))
    large = _lookups(ctx, database_url, sample, f"{engine}-{sessions}")
    return {
        "small": {"sessions": SMALL, **small, "size": small_size},
        "large": {"sessions": sessions, **large, "size": large_size},
        "ratio": large["rate"] / small["rate"] if small["rate"] else 0.0,
        "load_seconds": round(load_seconds, 1),
    }


def scale_part(
    ctx: Context, engines: list[str], sessions: int, spread: int = LOOKUP_TOKENS
) -> dict[str, Any]:
    return {engine: scale_engine(ctx, engine, sessions, spread) for engine in engines}
