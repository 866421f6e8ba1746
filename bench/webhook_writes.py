"""How long the store takes to record a webhook, on each engine: ``python -m bench.webhook_writes``.

Not part of ``bench/run``: no server, no HTTP, only ``Store.record_webhook`` as the webhook
route calls it (a new session's ``action_required``, the relay on for the provider's webhooks
and the bridge's own events), so that a change to the write can be measured by itself. Prints
webhooks a second and the mean time of one, one at a time and with several in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid

from app import events
from app.bridge import webhook_write
from app.config import DB_POOL_MAX, DB_POOL_MIN, DB_TIMEOUT
from app.provider import meaning, parse_webhook
from app.store import Delivery, Store, Update, open_store
from tests.payloads import webhook
from tests.postgres import PostgresServer

ACTION_TIMEOUT = 3600.0


def _webhook(number: int) -> tuple[Delivery, Update]:
    """A new session's ``action_required``, as the webhook route hands it to the store."""
    document = webhook("action_required", f"ps_{uuid.uuid4().hex}")
    body = json.dumps(document).encode()
    return webhook_write(
        body,
        parse_webhook(document, body),
        meaning=meaning(document),
        received_at=time.time(),
        relay_signature="signature",
        action_timeout=ACTION_TIMEOUT,
    )


async def _measure(store: Store, count: int, in_flight: int) -> tuple[float, float]:
    """Webhooks a second, and the mean milliseconds of one, with ``in_flight`` at a time."""
    work = [_webhook(number) for number in range(count)]
    queue = iter(work)
    took: list[float] = []

    async def sender() -> None:
        for delivery, update in queue:
            began = time.perf_counter()
            await store.record_webhook(delivery, update)
            took.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(in_flight)))
    elapsed = time.perf_counter() - began
    return count / elapsed, 1000 * sum(took) / len(took)


async def _engine(database_url: str, count: int, in_flight: tuple[int, ...]) -> None:
    store = open_store(database_url, pool_min=DB_POOL_MIN, pool_max=DB_POOL_MAX, timeout=DB_TIMEOUT)
    await store.open()
    store.emit = events.emitted
    try:
        await _measure(store, min(count, 200), 1)  # warm-up: connections, prepared statements
        for flight in in_flight:
            rate, mean = await _measure(store, count, flight)
            engine = database_url.split(":", 1)[0]
            print(f"| {engine} | {flight} | {rate:,.0f} | {mean:.2f} |", flush=True)
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="webhooks per measurement")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 16])
    parser.add_argument(
        "--engine", choices=["sqlite", "postgresql"], nargs="+", default=["postgresql"]
    )
    options = parser.parse_args()
    print("| engine | in flight | webhooks/s | mean ms |\n|---|---|---|---|")
    for engine in options.engine:
        if engine == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                url = f"sqlite:///{folder}/bridge.sqlite3"
                asyncio.run(_engine(url, options.count, tuple(options.in_flight)))
            continue
        server = PostgresServer()
        server.start()
        try:
            url = server.new_database()
            asyncio.run(_engine(url, options.count, tuple(options.in_flight)))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
