"""The benchmark's own harness: stopped from outside, it unwinds (its servers are stopped)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAITING = """
import asyncio, sys
from bench.common import run_async

async def wait():
    try:
        print("waiting", flush=True)
        await asyncio.sleep(60)
    finally:
        print("unwound", flush=True)

run_async(wait())
"""


def test_a_benchmark_stopped_by_sigterm_unwinds_its_event_loop() -> None:
    """bench/run's servers are stopped as its stack unwinds; under uvloop a handler set with
    signal.signal ran only once the loop woke for something else, so a soak stopped from
    outside left its bridge relaying."""
    with subprocess.Popen(
        [sys.executable, "-c", WAITING], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "waiting\n"
            time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 143
            assert process.stdout.read() == "unwound\n"
        finally:
            process.kill()
