"""The relay in real `serve` processes against a recording partner on loopback, both engines:
kill -9 with deliveries pending loses none, and however many processes and instances send,
no delivery ever has two attempts in flight and each session's go out one at a time, in order."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks import Webhook

from .conftest import API_KEY, RELAY_SECRET, public_pem
from .database import query
from .partner import Partner, Received, recording_partner
from .payloads import webhook
from .servers import Client, Served, environment

KINDS = ["action_required", "ready_to_confirm", "ready_to_capture", "payment_finished"]


@pytest.fixture
def partner_backend() -> Iterator[Partner]:
    with recording_partner() as backend:
        yield backend


def settings(database_url: str, key: rsa.RSAPrivateKey, partner: Partner, **more: str) -> Any:
    return environment(
        **{
            "DATABASE_URL": database_url,
            "SECRET_KEY": "relay-serve-secret-0123456789-0123456789",
            "SG_PUBLIC_KEY": public_pem(key),
            "API_KEYS": json.dumps([API_KEY]),
            "RELAY_URL": partner.url,
            "RELAY_MAX_DELAY": "1",  # retries come within a second
            "RELAY_MAX_AGE": "600",  # and nothing fails for good unless told
            **more,
        }
    )


class Answers:
    """The partner's answers by policy, each remembered (the partner records requests only)."""

    def __init__(self, partner: Partner) -> None:
        self.policy: Callable[[Received], int] = lambda received: 200
        self._given: dict[int, int] = {}
        self._lock = threading.Lock()
        partner.answer = self

    def __call__(self, received: Received) -> int:
        status = self.policy(received)
        with self._lock:
            self._given[id(received)] = status
        return status

    def to(self, received: Received) -> int:
        with self._lock:
            return self._given[id(received)]


def payload(session_id: str, sequence: int) -> dict[str, Any]:
    """The ``sequence``-th webhook of a session; every one has bytes of its own."""
    stamp = f"2027-01-15T07:{sequence // 60:02d}:{sequence % 60:02d}Z"
    return webhook(KINDS[sequence % len(KINDS)], session_id, updated_at=stamp, sequence=sequence)


class Burst:
    """Each session's webhooks sent one after the other (so the order of receipt is the order
    of ``sequence``), sessions side by side; a session stops at its first failure."""

    def __init__(self, clients: list[Client], sessions: list[str], per_session: int) -> None:
        self.clients = clients
        self.sessions = sessions
        self.per_session = per_session
        self.sent: dict[tuple[str, int], tuple[bytes, str]] = {}  # body and signature
        self.answered: set[tuple[str, int]] = set()  # answered 200 "accepted"
        self._lock = threading.Lock()
        # Daemon threads: a test that fails half way leaves nothing to wait for at exit.
        self._threads = [
            threading.Thread(target=self._session, args=(index,), daemon=True)
            for index in range(len(sessions))
        ]
        for thread in self._threads:
            thread.start()

    def _session(self, index: int) -> None:
        session_id = self.sessions[index]
        for sequence in range(self.per_session):
            client = self.clients[(index + sequence) % len(self.clients)]
            body, headers = client.signed(payload(session_id, sequence))
            with self._lock:
                self.sent[session_id, sequence] = body, headers["X-PARTNER-SIGN"]
            try:
                status, answer = client.deliver(body, headers)
            except Exception:  # noqa: BLE001 - killed under us: what was not answered need not be there
                return
            if status != 200 or answer.get("status") != "accepted":
                return
            with self._lock:
                self.answered.add((session_id, sequence))

    def count(self) -> int:
        with self._lock:
            return len(self.answered)

    def join(self) -> None:
        deadline = time.monotonic() + 60
        for thread in self._threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0))
            assert not thread.is_alive(), "a session's webhooks are still being sent"


async def settled(database_url: str, expected: int | None, timeout: float) -> dict[str, int]:
    """How many deliveries are in each state, once every one is delivered (and, when given,
    there are ``expected`` of them) or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await query(database_url, "SELECT state, count(*) FROM deliveries GROUP BY state")
        states = dict(rows)
        if set(states) == {"delivered"} and expected in (None, states["delivered"]):
            return states
        if time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.2)


def whose(received: Received) -> tuple[str, int]:
    body = json.loads(received.body)
    return body["session"]["id"], body["sequence"]


def assert_bytes_and_signature(received: list[Received], burst: Burst) -> None:
    for item in received:
        body, signature = burst.sent[whose(item)]
        assert item.body == body
        assert item.headers["x-partner-sign"] == signature
        assert item.headers["content-type"] == "application/json"
        Webhook(RELAY_SECRET).verify(item.body, item.headers)  # as the partner's library does


def assert_one_at_a_time_in_order(received: list[Received]) -> None:
    """Per session: each request began after the one before it ended, in the order of receipt
    (the bodies' ``sequence``, and the delivery ids with it)."""
    by_session: dict[str, list[Received]] = defaultdict(list)
    for item in sorted(received, key=lambda item: item.started):
        by_session[whose(item)[0]].append(item)
    for session_id, items in by_session.items():
        for earlier, later in zip(items, items[1:], strict=False):
            assert later.started >= earlier.ended, f"{session_id}: two at the partner at once"
            assert whose(later)[1] >= whose(earlier)[1], f"{session_id}: out of order"
            ids = {item.headers["x-bridge-delivery-id"] for item in (earlier, later)}
            assert len(ids) == 2 or whose(later) == whose(earlier), f"{session_id}: an id again"


async def test_kill_9_with_deliveries_pending_loses_none(
    database_url: str, provider_key: rsa.RSAPrivateKey, partner_backend: Partner, tmp_path: Path
) -> None:
    # The partner fails every attempt, slowly enough that claims are in flight at the kill.
    answers = Answers(partner_backend)
    answers.policy = lambda received: 500
    partner_backend.delay = 0.1
    environ = settings(database_url, provider_key, partner_backend, RELAY_TIMEOUT="1")
    server = Served(environ, workers=2, log=tmp_path / "serve.log").start()
    try:
        client = Client(server.url, provider_key, API_KEY)
        sessions = [f"ps_kill_{number}" for number in range(10)]
        burst = Burst([client], sessions, per_session=12)
        deadline = time.monotonic() + 30
        while burst.count() < 60:  # well into the burst
            assert time.monotonic() < deadline, "the burst did not get going"
            await asyncio.sleep(0.01)
        partner_backend.wait_for(1)  # deliveries are being tried (and failing)
        server.kill()
        burst.join()
        assert 60 <= len(burst.answered) < 120  # the kill came mid-burst

        answers.policy = lambda received: 200
        partner_backend.delay = 0.0
        server.start()  # claims the dead processes held lapse by themselves
        states = await settled(database_url, None, timeout=40)
    finally:
        server.stop()

    received = list(partner_backend.received)
    assert set(states) == {"delivered"}, states
    total = states["delivered"]
    assert any(answers.to(item) == 500 for item in received)
    assert_bytes_and_signature(received, burst)
    assert_one_at_a_time_in_order(received)
    # Every webhook answered 200 (and any the kill cut off after its commit) reached the
    # partner, each session's as an unbroken run from its first.
    delivered: dict[str, list[int]] = defaultdict(list)
    for item in sorted(received, key=lambda item: item.started):
        if answers.to(item) == 200:
            session_id, sequence = whose(item)
            if not delivered[session_id] or delivered[session_id][-1] != sequence:
                delivered[session_id].append(sequence)
    assert sum(len(sequences) for sequences in delivered.values()) == total
    for session_id, sequences in delivered.items():
        assert sequences == list(range(len(sequences))), session_id
    assert burst.answered <= {
        (session_id, sequence)
        for session_id, sequences in delivered.items()
        for sequence in sequences
    }


@pytest.fixture
def four_processes(
    database_url: str, provider_key: rsa.RSAPrivateKey, partner_backend: Partner, tmp_path: Path
) -> Iterator[list[Client]]:
    """Two instances of two workers each on one database: four senders claiming."""
    environ = settings(database_url, provider_key, partner_backend, RELAY_TIMEOUT="5")
    servers: list[Served] = []
    try:
        for number in range(2):
            log = tmp_path / f"serve-{number}.log"
            servers.append(Served(environ, workers=2, log=log).start())
        yield [Client(server.url, provider_key, API_KEY) for server in servers]
    finally:
        for server in servers:
            server.stop()


async def test_no_delivery_is_ever_in_flight_twice(
    four_processes: list[Client], partner_backend: Partner, database_url: str
) -> None:
    # Slow, and failing every other request (up to a delivery's third attempt): retries come
    # from every process, each free to claim any delivery due.
    partner_backend.delay = 0.3
    answers = Answers(partner_backend)
    count = iter(range(10**6))
    lock = threading.Lock()

    def flaky(received: Received) -> int:
        with lock:
            odd = next(count) % 2
        return 500 if odd and int(received.headers["x-bridge-attempt"]) < 4 else 200

    answers.policy = flaky
    sessions = [f"ps_race_{number}" for number in range(12)]
    burst = Burst(four_processes, sessions, per_session=4)
    burst.join()
    assert len(burst.answered) == 48
    states = await settled(database_url, 48, timeout=45)
    await asyncio.sleep(0.5)  # nothing more comes

    received = list(partner_backend.received)
    assert_bytes_and_signature(received, burst)
    assert_one_at_a_time_in_order(received)
    attempts: dict[str, list[Received]] = defaultdict(list)
    for item in sorted(received, key=lambda item: item.started):
        attempts[item.headers["x-bridge-delivery-id"]].append(item)
    for delivery_id, items in attempts.items():
        for earlier, later in zip(items, items[1:], strict=False):
            assert later.started >= earlier.ended, f"delivery {delivery_id}: two in flight"
        # Numbered 1, 2, … by the attempts on record: none was made twice, none after success.
        assert [item.headers["x-bridge-attempt"] for item in items] == [
            str(number) for number in range(1, len(items) + 1)
        ], delivery_id
    assert states == {"delivered": 48}
    assert len(attempts) == 48
    assert any(len(items) > 1 for items in attempts.values())  # retries happened
    for delivery_id, items in attempts.items():
        assert [answers.to(item) for item in items][-1] == 200, delivery_id
        assert [answers.to(item) for item in items].count(200) == 1, delivery_id
    recorded = await query(database_url, "SELECT message_id, attempts FROM deliveries")
    assert {str(row[0]): row[1] for row in recorded} == {
        delivery_id: len(items) for delivery_id, items in attempts.items()
    }


async def test_after_an_outage_one_call_brings_every_session_back_in_order(
    database_url: str, provider_key: rsa.RSAPrivateKey, partner_backend: Partner, tmp_path: Path
) -> None:
    """The partner is down until every delivery has failed for good; then one call puts them
    all back in line, and each session's reach it in the order received, across two instances
    of two workers each."""
    answers = Answers(partner_backend)
    answers.policy = lambda received: 503
    environ = settings(
        database_url, provider_key, partner_backend, RELAY_TIMEOUT="1", RELAY_MAX_AGE="3"
    )
    servers = [
        Served(environ, workers=2, log=tmp_path / f"serve-{number}.log").start()
        for number in range(2)
    ]
    try:
        clients = [Client(server.url, provider_key, API_KEY) for server in servers]
        sessions = [f"ps_outage_{number}" for number in range(8)]
        burst = Burst(clients, sessions, per_session=4)
        burst.join()
        assert len(burst.answered) == 32
        deadline = time.monotonic() + 60
        while dict(
            await query(database_url, "SELECT state, count(*) FROM deliveries GROUP BY state")
        ) != {"failed": 32}:
            assert time.monotonic() < deadline, "the deliveries did not all fail"
            await asyncio.sleep(0.2)
        answers.policy = lambda received: 200
        retried_at = time.monotonic()
        authorised = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        status, _, body = clients[1].call(
            "POST", "/api/v1/relay/deliveries/retry", b"{}", authorised
        )
        assert (status, json.loads(body)) == (202, {"requeued": 32})
        states = await settled(database_url, 32, timeout=40)
    finally:
        for server in servers:
            server.stop()
    assert states == {"delivered": 32}
    received = list(partner_backend.received)
    assert_bytes_and_signature(received, burst)
    assert_one_at_a_time_in_order([item for item in received if item.started >= retried_at])
    delivered: dict[str, list[int]] = defaultdict(list)
    for item in sorted(received, key=lambda item: item.started):
        if answers.to(item) == 200:
            delivered[whose(item)[0]].append(whose(item)[1])
    assert delivered == {session_id: [0, 1, 2, 3] for session_id in sessions}
