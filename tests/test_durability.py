"""Acknowledged means on disk: a webhook's 200 leaves only once its commit is on the disk.

On SQLite the commit is durable when the WAL file has been synced (``synchronous = FULL``): a
real ``serve`` runs under strace, and for every webhook the trace shows the WAL's sync finish
after its request was read and before its 200 was written, one at a time and in a group
commit. PostgreSQL syncs its own WAL; the bridge says at start when the server is set not to.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign

from .conftest import API_KEY, public_pem
from .database import open_store
from .payloads import webhook
from .postgres import PostgresServer
from .servers import Served, environment

SYSCALLS = "trace=fsync,fdatasync,read,recvfrom,write,writev,sendto,sendmsg"
# One strace line: the thread, the call and its first argument (a descriptor and what it is,
# -yy), and the rest; or the end of a call strace showed unfinished.
_CALL = re.compile(r"^(\d+) +(\w+)\((\d+)<(.+?)>([,) ].*)$")  # a socket's "->" holds a ">"
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>(.*)$")


@dataclass
class Call:
    at: int  # the line it finished on
    name: str
    target: str  # the file or socket
    text: str


def calls(trace: str) -> list[Call]:
    """The calls of a trace in the order they finished (a call strace showed unfinished ends
    where its "resumed" line is)."""
    finished: list[Call] = []
    pending: dict[tuple[str, str], Call] = {}
    for number, line in enumerate(trace.splitlines()):
        if resumed := _RESUMED.match(line):
            call = pending.pop((resumed[1], resumed[2]), None)
            if call is not None:
                call.at = number
                call.text += resumed[3]  # a read's buffer is shown once it is filled
                finished.append(call)
            continue
        if found := _CALL.match(line):
            thread, name, _, target, rest = found.groups()
            call = Call(number, name, target, rest)
            if "<unfinished ...>" in rest:
                pending[(thread, name)] = call
            else:
                finished.append(call)
    return sorted(finished, key=lambda call: call.at)


def acknowledged_after_sync(trace: str, database: Path) -> list[bool]:
    """For each webhook answered 200: whether a sync of the database's WAL finished after its
    request was read and before its 200 was written, on the same connection."""
    wal = f"{database}-wal"
    read: dict[str, int] = {}  # connection -> where its webhook was read
    verdicts = []
    ordered = calls(trace)
    synced = [
        call.at for call in ordered if call.name in ("fsync", "fdatasync") and call.target == wal
    ]
    for call in ordered:
        if not call.target.startswith("TCP"):
            continue
        if call.name in ("read", "recvfrom") and '"POST /webhooks/smart-glocal' in call.text:
            read[call.target] = call.at
        elif call.name in ("write", "writev", "sendto", "sendmsg") and "HTTP/1.1 200" in call.text:
            start = read.pop(call.target, None)
            if start is not None:
                verdicts.append(any(start < at < call.at for at in synced))
    return verdicts


def post(port: int, body: bytes, signature: str) -> bytes:
    """One webhook on a connection of its own; the whole answer."""
    head = (
        f"POST /webhooks/smart-glocal HTTP/1.1\r\nHost: bridge.test\r\n"
        f"Content-Type: application/json\r\nX-PARTNER-SIGN: {signature}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


Traced = tuple[Served, Path, Path]  # the server, its database, its trace


@pytest.fixture
def traced(tmp_path: Path, provider_key: rsa.RSAPrivateKey) -> Iterator[Traced]:
    strace = shutil.which("strace")
    assert strace, "strace is installed by scripts/test"
    database = tmp_path / "bridge.sqlite3"
    trace = tmp_path / "trace.txt"
    settings = environment(
        DATABASE_URL=f"sqlite:///{database}",
        SECRET_KEY="durability-secret-key-0123456789",
        SG_PUBLIC_KEY=public_pem(provider_key),
        API_KEYS=json.dumps([API_KEY]),
    )
    prefix = [strace, "-f", "-yy", "-s", "48", "-e", SYSCALLS, "-o", str(trace)]
    served = Served(settings, prefix=prefix).start()
    try:
        yield served, database, trace
    finally:
        served.stop()


def signed(key: rsa.RSAPrivateKey, number: int) -> tuple[bytes, str]:
    stamp = f"2027-01-15T07:{number % 60:02d}:{number // 60:02d}.000000Z"
    body = json.dumps(webhook("action_required", f"ps_{number}", updated_at=stamp)).encode()
    return body, sign(key, body)


def test_a_webhook_is_on_disk_before_its_200(
    traced: Traced, provider_key: rsa.RSAPrivateKey
) -> None:
    served, database, trace = traced
    answer = post(served.port, *signed(provider_key, 1))
    assert answer.startswith(b"HTTP/1.1 200") and b'"accepted"' in answer
    served.stop()  # the trace is complete once the server is gone
    assert acknowledged_after_sync(trace.read_text(), database) == [True]


def test_a_group_commit_is_on_disk_before_any_of_its_200s(
    traced: Traced,
    provider_key: rsa.RSAPrivateKey,
) -> None:
    served, database, trace = traced
    bodies = [signed(provider_key, number) for number in range(24)]
    with ThreadPoolExecutor(12) as senders:  # at once: the writer commits them in groups
        answers = list(senders.map(lambda one: post(served.port, *one), bodies))
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers)
    served.stop()
    text = trace.read_text()
    verdicts = acknowledged_after_sync(text, database)
    assert len(verdicts) == 24 and all(verdicts)
    syncs = sum(1 for call in calls(text) if call.name in ("fsync", "fdatasync"))
    assert syncs < 24 * 2  # grouped: fewer syncs than one a webhook would take


def test_the_check_sees_a_200_written_before_the_sync() -> None:
    """The trace check can fail: a 200 written before the WAL's sync finished."""
    database = Path("/data/bridge.sqlite3")
    trace = "\n".join(
        [
            "11 read(9<TCP:[1->2]>,  <unfinished ...>",
            '11 <... read resumed>"POST /webhooks/smart-glocal HTTP/1.1"..., 65536) = 900',
            "12 fdatasync(7</data/bridge.sqlite3-wal> <unfinished ...>",
            '11 write(9<TCP:[1->2]>, "HTTP/1.1 200 OK\\r\\n"..., 120) = 120',
            "12 <... fdatasync resumed>) = 0",
        ]
    )
    assert acknowledged_after_sync(trace, database) == [False]
    in_order = trace.splitlines()
    in_order[3], in_order[4] = in_order[4], in_order[3]
    assert acknowledged_after_sync("\n".join(in_order), database) == [True]


# -- PostgreSQL ----------------------------------------------------------------------------


async def test_postgresql_that_does_not_sync_is_named_at_start(
    postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The tests' own server runs with fsync off (speed), so it is named; a connection with
    synchronous_commit off is named too, and one with it on is not."""
    url = postgres.new_database()
    for settings, expected in (("", False), ("&synchronous_commit=off", True)):
        caplog.clear()
        store = open_store(url + settings)
        with caplog.at_level(logging.WARNING, logger="app.store.postgres"):
            await store.open()
        await store.close()
        said = [record.getMessage() for record in caplog.records]
        assert any("fsync off" in message for message in said)
        assert any("synchronous_commit is off" in message for message in said) is expected
