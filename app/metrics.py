"""Prometheus metrics, one registry per app (requests are timed by :mod:`app.telemetry`).

Under ``serve --workers N`` every worker writes its metrics to ``PROMETHEUS_MULTIPROC_DIR``
(prometheus-client's multiprocess mode) and a scrape adds up all of them.
"""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .lifecycle import Status
from .provider import WEBHOOK_TYPES
from .store import DeliveryState

# What the webhook route counts a refused delivery as (app/webhook_service.py).
WEBHOOK_REFUSALS = ("invalid_signature", "invalid_json", "not_a_webhook", "body_too_large")
# What came of a bank step (app/bank_outcomes.py), and how many bank origins a process names apart.
BANK_OUTCOMES = ("returned", "fallback", "abandoned")
BANK_ORIGINS = 100
OTHER_BANKS = "other"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks = Counter(
            "bridge_webhooks",
            "Webhook deliveries by type and outcome",
            ["type", "outcome"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "bridge_status_transitions",
            "Session status changes by new status",
            ["status"],
            registry=self.registry,
        )
        self.unchanged = Counter(
            "bridge_webhooks_unchanged",
            "Webhooks accepted that changed nothing (older than the status, or repeated news)",
            ["type"],
            registry=self.registry,
        )
        self.token_failures = Counter(
            "bridge_token_failures",
            "Customer tokens refused (bad, tampered or expired)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "bridge_request_duration_seconds",
            "Time to the answer's first byte by route, method and status code (long-polls apart)",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.long_polls = Histogram(
            "bridge_long_poll_duration_seconds",
            "How long status long-polls (?wait=N) were held before their answer",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 15, 20, 25, 30, 35),
            registry=self.registry,
        )
        self.waiters = Gauge(
            "bridge_long_poll_waiters",
            "Status requests and event streams waiting for a change",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.relay_attempts = Counter(
            "bridge_relay_attempts",
            "Relay attempts by what came of them: delivered, pending (tried again later), failed",
            ["outcome"],
            registry=self.registry,
        )
        self.relay_pending = Gauge(
            "bridge_relay_pending",
            "Deliveries waiting to reach the partner's backend",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.relay_oldest = Gauge(
            "bridge_relay_oldest_pending_seconds",
            "Age of the oldest delivery waiting to reach the partner's backend",
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.kept_answers = Counter(
            "bridge_kept_answers",
            "Status answers and customer pages by whether they were sent as kept from an"
            " earlier request (kept) or built for this one (built)",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.fast_path_faults = Counter(
            "bridge_fast_path_faults",
            "Status and page requests the layer below Quart failed on (logged), answered by"
            " the app instead: a fault of the bridge's, never a customer's",
            ["route"],
            registry=self.registry,
        )
        self.bank_steps = Counter(
            "bridge_bank_steps",
            "Bank steps by the bank's origin (the first ones a process sees, then other) and"
            " what came of them: returned, fallback (a framed step went to a window),"
            " abandoned (the session ended after the form went, with no return)",
            ["bank", "outcome"],
            registry=self.registry,
        )
        self.bank_return = Histogram(
            "bridge_bank_step_return_seconds",
            "Time from the bank form leaving the bridge's page to the customer's return, by"
            " the bank's origin",
            ["bank"],
            buckets=(10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=self.registry,
        )
        self._banks: dict[str, None] = {}  # the origins named apart, the first seen
        self.bank_looks = Counter(
            "bridge_bank_looks",
            "Looks at a bank origin's answer headers by what they said of frames: refused,"
            " allowed, or unknown (no answer, or none to be sure of)",
            ["frames"],
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        """Every series an alert may watch exists from the start, at 0: ``increase()`` over a
        series that appears with its first event misses that event."""
        kinds = sorted(WEBHOOK_TYPES) + ["other"]
        for kind in kinds:
            for outcome in ("accepted", "duplicate", "ignored"):
                _child(self._children, self.webhooks, kind, outcome)
            _child(self._children, self.unchanged, kind)
        for refusal in WEBHOOK_REFUSALS:
            _child(self._children, self.webhooks, "none", refusal)
        for status in Status:
            _child(self._children, self.transitions, status.value)
        for state in DeliveryState:
            _child(self._children, self.relay_attempts, state)
        for route in ("status", "page"):
            _child(self._children, self.fast_path_faults, route)
        self._start_bank(OTHER_BANKS)

    def _start_bank(self, label: str) -> None:
        for outcome in BANK_OUTCOMES:
            _child(self._children, self.bank_steps, label, outcome)

    def exposition(self) -> bytes:
        """The text a scrape gets: every worker's metrics when there are several."""
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            return generate_latest(self.registry)
        everyone = CollectorRegistry()
        everyone.register(_Workers(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
        return generate_latest(everyone)

    def webhook(self, kind: str | None, outcome: str, *, changed: bool = True) -> None:
        label = kind if kind in WEBHOOK_TYPES else ("other" if kind else "none")
        _child(self._children, self.webhooks, label, outcome).inc()
        if outcome == "accepted" and not changed:
            _child(self._children, self.unchanged, label).inc()

    def transition(self, status: str) -> None:
        _child(self._children, self.transitions, status).inc()

    def time_route(self, route: str, method: str, status: int, seconds: float) -> None:
        _child(self._children, self.latency, route, method, _STATUS.get(status, "other")).observe(
            seconds
        )

    def relay_attempt(self, outcome: DeliveryState) -> None:
        _child(self._children, self.relay_attempts, outcome).inc()

    def relay_backlog(self, pending: int, oldest_seconds: float) -> None:
        self.relay_pending.set(pending)
        self.relay_oldest.set(oldest_seconds)

    def kept_answer(self, route: str, outcome: str) -> None:
        _child(self._children, self.kept_answers, route, outcome).inc()

    def bank_look(self, frames: str) -> None:
        _child(self._children, self.bank_looks, frames).inc()

    def fast_path_fault(self, route: str) -> None:
        _child(self._children, self.fast_path_faults, route).inc()

    def time_long_poll(self, seconds: float) -> None:
        self.long_polls.observe(seconds)

    def bank_seen(self, origin: str) -> str:
        """The label of a bank origin (one from a signed webhook): its own for the first
        :data:`BANK_ORIGINS` this process sees, whose series start at 0; ``other`` after."""
        if origin in self._banks:
            return origin
        if len(self._banks) >= BANK_ORIGINS:
            return OTHER_BANKS
        self._banks[origin] = None
        self._start_bank(origin)
        return origin

    def bank_step(self, origin: str, outcome: str, seconds: float | None = None) -> None:
        """One bank step's ``outcome`` (one of :data:`BANK_OUTCOMES`); for a return, the
        ``seconds`` since its form left, when known."""
        label = self.bank_seen(origin)
        _child(self._children, self.bank_steps, label, outcome).inc()
        if seconds is not None:
            _child(self._children, self.bank_return, label).observe(seconds)


# Status codes as label values, made once; a code outside HTTP's range is "other".
_STATUS = {code: str(code) for code in range(100, 600)}


def _child(children: dict[tuple[Any, ...], Any], metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, looked up once: ``labels()`` takes a lock and builds a key."""
    key = (metric, *labels)
    child = children.get(key)
    if child is None:
        child = children[key] = metric.labels(*labels)
    return child


class _Workers(Collector):
    """prometheus_client's multiprocess collector, less the files a worker created and has not
    sized yet (or never will, killed in between): read, such a file raised, and the scrape
    lost every worker's metrics (prometheus/client_python#1199)."""

    def __init__(self, folder: str) -> None:
        self._folder = folder

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in glob.glob(os.path.join(self._folder, "*.db")):
            with contextlib.suppress(OSError):  # gone meanwhile: its worker ended
                if os.path.getsize(path) > 0:
                    files.append(path)
        merge = multiprocess.MultiProcessCollector.merge
        merged: Iterable[Metric] = merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged
