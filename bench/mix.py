"""The traffic a partner's bridge sees, as the soak sends it: customer journeys. Each is one
session going through one of the orders of webhooks Smart Glocal documents (the suite's own
payloads, tests/payloads.py), a step every ``STEP_SECONDS``, while its customer reads the pages,
comes back from the bank, and follows the status one of three ways: plain polls every second,
long-polls (``?wait=``), or the event stream. The webhooks are signed here, dated by the
provider's clock at the moment each is due.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign
from app.tokens import Tokens

from .client import request
from .common import webhook_body

FINAL = ("succeeded", "failed", "canceled", "error", "refunded")
STEP_SECONDS = 2.0  # between one step of a flow and the next
PAGE_DELAY = 0.5  # a customer reads the page this long after the webhook that changed it
POLL_SECONDS = 1.0
WATCHES = ("poll", "long-poll", "events")
WAIT = 25  # a long-poll's ?wait=
BACK_FORM = b"PaRes=eJzLSM3JyVcozy%2FKSQEAGgQEXQ%3D%3D&MD=abc75daefnn"  # from the bank


@dataclass(frozen=True)
class Hook:
    """A webhook of a flow: its type, and the fields tests/payloads.webhook takes."""

    kind: str
    fields: dict[str, Any] = field(default_factory=dict)


BACK = Hook("")  # not a webhook: the customer comes back from the bank
CONFIRM = Hook("ready_to_confirm", {"next_action": "confirm"})
CAPTURE = Hook("ready_to_capture", {"next_action": "capture"})
ACTION = Hook("action_required")
PAID = Hook("payment_finished", {"session_status": "accepted", "payment_status": "succeeded"})
CANCELED = Hook("payment_finished", {"session_status": "cancelled", "payment_status": "failed"})
DECLINED = Hook(
    "payment_finished",
    {"payment_status": "failed", "error_code": "insufficient_funds"},
)
# The orders the contract lists (confirm first, automatic, the provider's widget, two-stage),
# with and without 3-D Secure, ending well or not.
FLOWS: dict[str, tuple[Hook, ...]] = {
    "confirm-first": (CONFIRM, ACTION, BACK, PAID),
    "automatic": (ACTION, BACK, PAID),
    "widget": (ACTION, CONFIRM, PAID),
    "two-stage-capture": (CONFIRM, ACTION, BACK, CAPTURE, PAID),
    "declined": (CONFIRM, ACTION, BACK, DECLINED),
    "no-3ds": (PAID,),
    "two-stage-cancel": (CONFIRM, CAPTURE, CANCELED),
}


@dataclass(frozen=True)
class Request:
    """One request of a journey, sent ``at`` seconds after its start."""

    at: float
    kind: str  # webhook, page, return, poll
    data: bytes  # as sent
    body_digest: str = ""  # a webhook's: what the partner's log holds of the body it got


@dataclass(frozen=True)
class Journey:
    number: int
    start: float  # wall clock (time.time()) of its first step
    token: str
    watch: str  # one of WATCHES
    end: float  # seconds from the start to its final webhook
    requests: tuple[Request, ...]  # in the order they are due


def shape(number: int) -> tuple[str, str]:
    """Journey ``number``'s flow and way of following the status: every pair in turn."""
    names = list(FLOWS)
    return names[number % len(names)], WATCHES[number // len(names) % len(WATCHES)]


def timeline(flow: str, watch: str) -> tuple[list[tuple[float, str, Hook]], float]:
    """When each request of a journey is due, what it is, and when its final webhook is."""
    steps, due = FLOWS[flow], list[tuple[float, str, Hook]]()
    for index, step in enumerate(steps):
        at = index * STEP_SECONDS
        if step is BACK:
            due.append((at, "return", step))
            continue
        due.append((at, "webhook", step))
        if index == 0 or step is ACTION or index == len(steps) - 1:
            due.append((at + PAGE_DELAY, "page", step))
    end = (len(steps) - 1) * STEP_SECONDS
    if watch == "poll":
        polls = int((end + POLL_SECONDS) / POLL_SECONDS)
        due += [(POLL_SECONDS * (n + 1), "poll", BACK) for n in range(polls)]
    return sorted(due, key=lambda item: item[0]), end


def requests_per_journey() -> float:
    """The mean number of requests of a journey, the held ones aside, over every shape."""
    cycle = len(FLOWS) * len(WATCHES)
    return sum(len(timeline(*shape(number))[0]) for number in range(cycle)) / cycle


def plan(
    private_pem: bytes,
    secret: str,
    ttl: int,
    port: int,
    prefix: str,
    starts: dict[int, float],
) -> list[Journey]:
    """The journeys numbered and started (wall clock) as ``starts`` says, of sessions
    ``prefix`` and the number, their webhooks signed (run in a process of its own: signing is
    the costly part)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    tokens = Tokens([secret], ttl, time.time)
    made = []
    for number, start in starts.items():
        session = f"{prefix}{number:0{27 - len(prefix)}d}"  # as long as a provider's
        made.append(_journey(key, tokens, port, session, number, start))
    return made


def _journey(
    key: rsa.RSAPrivateKey, tokens: Tokens, port: int, session: str, number: int, start: float
) -> Journey:
    flow, watch = shape(number)
    due = timeline(flow, watch)
    token = tokens.mint(session).token
    made = []
    for at, kind, hook in due[0]:
        if kind == "webhook":
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(start + at))
            stamp += f".{int((start + at) % 1 * 1e6):06d}Z"
            body = webhook_body(session, hook.kind, **hook.fields, updated_at=stamp)
            headers = {"Content-Type": "application/json", "X-PARTNER-SIGN": sign(key, body)}
            data = request("POST", "/webhooks/smart-glocal", port, headers, body)
            made.append(Request(at, kind, data, hashlib.sha256(body).hexdigest()))
        elif kind == "return":
            headers = {"Content-Type": "application/x-www-form-urlencoded"}
            data = request("POST", f"/pay/{token}/return", port, headers, BACK_FORM)
            made.append(Request(at, kind, data))
        else:
            path = f"/pay/{token}" if kind == "page" else f"/api/v1/status/{token}"
            made.append(Request(at, kind, request("GET", path, port, {})))
    return Journey(number, start, token, watch, due[1], tuple(made))
