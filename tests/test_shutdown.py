"""Stopping `serve` with customers waiting: their long-polls and event streams answer and end,
nothing is cut off as an error."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from app.changes import ChangeFeed, drain_all

from .conftest import API_KEY, public_pem
from .servers import Client, Served, environment


async def test_draining_wakes_every_waiter_and_says_so() -> None:
    feed = ChangeFeed()
    with feed.watch("ps_1") as first, feed.watch("ps_2") as second:
        drain_all()
        assert first.done() and second.done() and feed.draining


def test_waiting_customers_get_their_answer_when_serve_stops(
    provider_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    settings = environment(
        DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.sqlite3'}",
        SECRET_KEY="shutdown-secret-0123456789-0123456789",
        SG_PUBLIC_KEY=public_pem(provider_key),
        API_KEYS=json.dumps([API_KEY]),
    )
    log = tmp_path / "serve.log"
    server = Served(settings, workers=1, log=log).start()
    client = Client(server.url, provider_key, API_KEY)
    token = client.token("ps_1")["token"]
    answers: dict[str, Any] = {}

    def long_poll() -> None:
        answers["poll"] = client.call("GET", f"/api/v1/status/{token}?wait=25")

    def stream() -> None:
        request = urllib.request.Request(f"{server.url}/api/v1/status/{token}/events")
        with urllib.request.urlopen(request, timeout=30) as events:
            answers["stream"] = events.read()  # to its end

    waiting = [threading.Thread(target=work) for work in (long_poll, stream)]
    for thread in waiting:
        thread.start()
    time.sleep(1.0)  # both are held now
    assert server.process is not None
    stopped = time.monotonic()
    os.killpg(server.process.pid, signal.SIGTERM)
    for thread in waiting:
        thread.join(15)
    server.process.wait(15)
    took = time.monotonic() - stopped
    assert answers["poll"].status == 200
    assert json.loads(answers["poll"].body)["status"] == "pending"
    assert b"event: status" in answers["stream"]
    assert took < 4.0, took  # not the 5 s uvicorn would wait before cutting them off
    said = log.read_text()
    assert "Traceback" not in said and '"level": "error"' not in said, said[-2000:]
