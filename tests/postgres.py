"""A private PostgreSQL server for the test run, from Debian's postgresql package."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (scripts/test installs it)")
    return found[-1]


def _version(path: str) -> int:
    return int(Path(path).parts[4])


def _as_owner(command: list[str]) -> list[str]:
    # The server refuses to run as root; Debian's package makes a postgres user for it.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PostgresServer:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="bridge-postgres-"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"postgresql://bridge@127.0.0.1:{self.port}"

    def start(self, *, initialise: bool = True) -> None:
        data = self.folder / "data"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        run = {"check": True, "capture_output": True}
        if initialise:
            subprocess.run(
                _as_owner(
                    [_bin("initdb"), "-D", str(data), "-U", "bridge", "-A", "trust", "--no-sync"]
                ),
                **run,
            )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={data}"
            " -c fsync=off -c max_connections=300"
        )
        subprocess.run(
            _as_owner(
                [
                    _bin("pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(self.folder / "log"),
                    "-o",
                    options,
                    "-w",
                    "start",
                ]
            ),
            **run,
        )

    def pause(self) -> None:
        """Stop the server, keeping its data: as if the database went away."""
        subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "stop"]),
            check=True,
            capture_output=True,
        )

    def resume(self) -> None:
        self.start(initialise=False)

    def stop(self) -> None:
        subprocess.run(
            _as_owner([_bin("pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(self.folder, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty schema on this server, as a database URL that works in it.

        A schema costs milliseconds where a database costs a quarter of a second; the bridge
        names its tables unqualified, so ``search_path`` (a server setting asyncpg takes from
        the URL) puts them in the schema.
        """
        name = f"t_{uuid.uuid4().hex[:16]}"
        with ThreadPoolExecutor(1) as thread:  # clear of the test's own event loop
            thread.submit(asyncio.run, self._execute(f"CREATE SCHEMA {name}")).result()
        return f"{self.url}/postgres?search_path={name}"

    async def _execute(self, sql: str) -> None:
        db = await asyncpg.connect(f"{self.url}/postgres")
        try:
            await db.execute(sql)
        finally:
            await db.close()
