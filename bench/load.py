"""How much of the machine something other than this benchmark used while it measured.

A shared machine (a test suite running beside the benchmark, say) takes cores from the servers
being measured and skews every ratio. Each measurement records the CPU used by processes that
are not the harness, its children (servers, their workers, wrk) or its PostgreSQL server, and
what the hypervisor stole, both in cores (1.0 = one core busy the whole time).
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
DISTURBED = 0.15  # cores of other processes' CPU that make a measurement worth repeating
# Roots of process trees that belong to the benchmark beyond its own descendants (PostgreSQL
# daemonises, so its postmaster is no child of ours).
extra_roots: list[int] = []


def _cpu_totals() -> tuple[float, float]:
    """Busy and stolen seconds of all CPUs since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    # irq and softirq time is left out: loopback traffic is handled there, for our own servers.
    return (user + nice + system) / TICKS, steal / TICKS


def _processes() -> dict[int, tuple[int, float]]:
    """Every process: its parent and the CPU seconds it has used."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS)
    return found


def _ours(processes: dict[int, tuple[int, float]]) -> float:
    """CPU seconds of the live processes under the harness and the extra roots, and of the
    kernel's threads (ksoftirqd carries loopback traffic, most of it ours, when softirqs pile
    up)."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in processes.items():
        children.setdefault(parent, []).append(pid)
    roots = [os.getpid(), *extra_roots, 2]  # 2: kthreadd, parent of every kernel thread
    seen, frontier = set(), list(roots)
    while frontier:
        pid = frontier.pop()
        if pid in seen:
            continue
        seen.add(pid)
        frontier += children.get(pid, [])
    # The harness's own time comes from getrusage below (it counts reaped children too).
    return sum(processes[pid][1] for pid in seen if pid in processes and pid != os.getpid())


def _reaped_and_self() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + reaped.ru_utime + reaped.ru_stime


class Monitor:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy, self.steal = _cpu_totals()
        self.ours = _ours(_processes()) + _reaped_and_self()

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        busy, steal = _cpu_totals()
        ours = _ours(_processes()) + _reaped_and_self()
        # Processes of ours that exited and were reaped meanwhile are in RUSAGE_CHILDREN; their
        # time before the start is in neither snapshot's live set, so it cannot be negative
        # beyond rounding.
        other = max((busy - self.busy) - (ours - self.ours), 0.0)
        return {
            "other_cores": round(other / elapsed, 2) if elapsed else 0.0,
            "steal_cores": round((steal - self.steal) / elapsed, 2) if elapsed else 0.0,
        }


def _busiest_others(before: dict[int, tuple[int, float]], limit: int = 3) -> str:
    """The live processes, not ours, that used the most CPU since ``before``."""
    now = _processes()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in now.items():
        children.setdefault(parent, []).append(pid)
    ours, frontier = set(), [os.getpid(), *extra_roots, 2]
    while frontier:
        pid = frontier.pop()
        if pid not in ours:
            ours.add(pid)
            frontier += children.get(pid, [])
    used = {
        pid: cpu - before.get(pid, (0, 0.0))[1] for pid, (_, cpu) in now.items() if pid not in ours
    }
    named = []
    for pid, cpu in sorted(used.items(), key=lambda item: -item[1])[:limit]:
        if cpu < 0.05:
            break
        with contextlib.suppress(OSError):
            command = (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
            named.append(f"{pid} {command[:60].strip()} ({cpu:.1f} s)")
    return "; ".join(named) or "short-lived processes"


def wait_for_quiet(most: float, threshold: float = DISTURBED) -> float:
    """Wait (at most ``most`` seconds) until other processes use under ``threshold`` cores over
    a second; returns what they used in the last second looked at."""
    from .context import say

    deadline = time.monotonic() + most
    told = False
    while True:
        before = _processes()
        monitor = Monitor()
        time.sleep(1.0)
        other = monitor.stop()["other_cores"]
        if other < threshold:
            if told:
                say("quiet again")
            return other
        if time.monotonic() >= deadline:
            say(f"still {other:.1f} cores busy elsewhere after {most:.0f} s; measuring anyway")
            return other
        if not told:
            say(
                f"other processes are using {other:.1f} cores ({_busiest_others(before)}); "
                f"waiting up to {most:.0f} s"
            )
            told = True
