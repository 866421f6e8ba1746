"""Loaded by every Python process of a bridge the soak starts with ``--soak-trace`` (this
folder is put first on its ``PYTHONPATH``): with ``BENCH_TRACE_DIR`` set, the process traces
its allocations from ``BENCH_TRACE_EVERY`` seconds on (tracemalloc, the allocating line only:
traced from the start, a worker starts too slowly for uvicorn's liveness check) and writes a
snapshot there every as many seconds after, ``{pid}-{n}.snap``, which the soak compares at the
end to tell memory that keeps growing from caches that fill. Tracing slows every allocation: a
run with it is for finding what grows, never for the soak's rates."""

import os
import threading
import time
import tracemalloc
from pathlib import Path


def _snapshots(folder: Path, every: float) -> None:
    time.sleep(every)
    tracemalloc.start(1)
    for number in range(1_000_000):
        time.sleep(every)
        tracemalloc.take_snapshot().dump(str(folder / f"{os.getpid()}-{number:04d}.snap"))


if folder := os.environ.get("BENCH_TRACE_DIR"):
    every = float(os.environ.get("BENCH_TRACE_EVERY", "300"))
    threading.Thread(
        target=_snapshots, args=(Path(folder), every), name="bench trace", daemon=True
    ).start()
