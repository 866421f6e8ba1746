"""Malformed webhooks by the ten thousand: no 5xx, no crash, nothing stored from a bad request.

Every case is generated from a fixed seed, so a failure names a case that comes back on the next
run. Most go through Quart's test client; what it cannot carry (header bytes that are not UTF-8,
NUL or DEL in header values, odd bytes in header names, a missing or lying ``Content-Length``, a
body in many pieces) is handed to the ASGI app directly, still in-process.

A body is "bad" when it is not signed by the provider's key, is over the size limit, is not JSON,
or is JSON but not a webhook: not an object with a non-empty string ``type`` and a ``session``
object whose ``id`` is 1-256 printable characters without white space or "/", all of it text (no
lone surrogate escapes). Each must get 400, 401, 413 or 422 with ``{"error": {"code",
"message"}}``, and nothing may be stored.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import random
import string
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Quart
from werkzeug.datastructures import Headers

from app.signature import sign

from .conftest import Partner, Provider
from .database import query
from .payloads import inform, redirect, webhook

URL = "/webhooks/smart-glocal"
LIMIT = 64 * 1024  # BRIDGE_WEBHOOK_MAX_BYTES' default, which the config fixture keeps
SEED = 20_240_527
MINIMUM_CASES = 10_000
ERROR_STATUSES = frozenset({400, 401, 413, 422})

UNSIGNED = frozenset({401})
TOO_LARGE = frozenset({413})


@dataclass(frozen=True, slots=True)
class Case:
    kind: str
    body: bytes
    expected: frozenset[int]
    # Test client: header names and values as text. Raw ASGI: bytes, exactly as sent.
    headers: tuple[tuple[str, str], ...] = ()
    raw_headers: tuple[tuple[bytes, bytes], ...] | None = None
    chunks: int = 1
    query: str = ""

    def describe(self) -> str:
        headers = self.raw_headers if self.raw_headers is not None else self.headers
        shown = [(name, value[:80]) for name, value in headers]
        return f"{self.kind}: headers={shown!r} body[{len(self.body)}]={self.body[:160]!r}"


# --- what a webhook is, worked out here without the app's code -----------------------------


def walk(document: Any) -> Iterator[Any]:
    """Every value and key of a decoded document, without recursion (it may be deep)."""
    stack = [document]
    while stack:
        item = stack.pop()
        yield item
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def depth_of(document: Any) -> int:
    deepest, stack = 0, [(document, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict | list):
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def has_lone_surrogate(document: Any) -> bool:
    return any(
        isinstance(item, str) and any(0xD800 <= ord(char) <= 0xDFFF for char in item)
        for item in walk(document)
    )


def usable_session_id(value: str) -> bool:
    """1-256 printable characters, no white space, no "/" (ids travel as a URL path segment)."""
    return 0 < len(value) <= 256 and not any(
        char.isspace() or char == "/" or ord(char) < 0x20 or ord(char) == 0x7F for char in value
    )


def looks_like_webhook(document: Any) -> bool:
    """A JSON object with a non-empty string ``type`` and a usable string ``session.id``, all
    of it text: such a body, signed, is a webhook and would be stored."""
    if not isinstance(document, dict):
        return False
    session = document.get("session")
    kind = document.get("type")
    return (
        isinstance(kind, str)
        and kind != ""
        and isinstance(session, dict)
        and isinstance(session.get("id"), str)
        and usable_session_id(session["id"])
        and not has_lone_surrogate(document)
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def signed_answer(body: bytes) -> frozenset[int] | None:
    """What a correctly signed body under the size limit must get: 400 not JSON, 422 not a
    webhook; ``None`` when it is a webhook (no use here: it would be stored)."""
    try:
        document = json.loads(body)  # what Python accepts: UTF-16/32, a BOM, NaN, Infinity
    except (ValueError, RecursionError):
        return frozenset({400})
    try:  # what RFC 8259 accepts
        json.loads(body.decode("utf-8"), parse_constant=_no_constants)
        strict = True
    except (ValueError, RecursionError):
        strict = False
    if looks_like_webhook(document):
        return None
    answer = {422}
    # Not strictly JSON, or nested deeper than the app's parser may go from inside a request:
    # "not JSON" is an answer as good as "not a webhook".
    if not strict or depth_of(document) > 500:
        answer.add(400)
    return frozenset(answer)


# --- material -------------------------------------------------------------------------------

ODD_TEXT = [
    "",
    " ",
    "\t",
    "\x00",
    "\x7f",
    "\u2028",
    "\u00a0",
    "\ufeff",
    "\U0001f4b3",
    "é",
    "кириллица",
    "<script>alert(1)</script>",
    "' OR 1=1 --",
    "%s%n%x",
    "{}",
    "null",
    "a" * 300,
    "../../etc/passwd",
    "ps_1",
    "action_required",
]
WRONG_TYPES: list[Any] = [
    None,
    0,
    1,
    -1,
    1.5,
    1e308,
    True,
    False,
    [],
    {},
    ["action_required"],
    {"type": "action_required"},
    "",
]
BAD_IDS: list[Any] = [
    *WRONG_TYPES,
    "",
    " ",
    "ps 1",
    "ps/1",
    "/",
    "ps\n1",
    "ps\t1",
    "\x00",
    "ps\x00",
    "ps\x7f",
    "ps\x1f",
    "ps\u2028",
    "ps\u00a0",
    "ps\u3000",
    "x" * 257,
    "y" * 5000,
    "ps_\ud800",
    "\udfff",
]
CONTENT_TYPES = [
    None,
    "",
    "text/plain",
    "text/html; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "multipart/form-data; boundary=----x",
    "application/json; charset=utf-16",
    "application/json; charset=bogus",
    "application/json;;;;",
    "application/xml",
    "*/*",
    "application/octet-stream",
    "image/png",
    "application/json, text/plain",
    ";=;=",
    "a" * 4000,
    'application/json; boundary="unterminated',
    "\u00e9/\u00e9",
]
SIGNATURE_NAMES = ["x-partner-sign", "X-Partner-Sign", "X-PARTNER-SIGN", "x-PARTNER-sign"]
LOOKALIKE_NAMES = [
    "X-PARTNER-SIGNATURE",
    "X-PARTNER-SIG",
    "X_PARTNER_SIGN",
    "PARTNER-SIGN",
    "X-SIGN",
    "X-PARTNER-SIGN-2",
    "Signature",
    "Authorization",
    "X-Hub-Signature-256",
]
B64 = string.ascii_letters + string.digits + "+/"


class Material:
    """Valid webhooks to break, and signatures made once for both engines."""

    def __init__(self, key: rsa.RSAPrivateKey, stranger: rsa.RSAPrivateKey) -> None:
        self.key = key
        self.stranger = stranger
        self.signatures: dict[bytes, str] = {}
        self.webhooks = [self._dumps(payload) for payload in self._payloads()]

    def sign(self, body: bytes) -> str:
        if body not in self.signatures:
            self.signatures[body] = sign(self.key, body)
        return self.signatures[body]

    @staticmethod
    def _payloads() -> list[dict[str, Any]]:
        payloads = []
        for number in range(12):
            session = f"ps_fuzz_{number}"
            payloads += [
                webhook("action_required", session),
                webhook("action_required", session, api="v2", interaction=inform()),
                webhook("action_required", session, interaction=redirect(method="GET")),
                webhook("ready_to_confirm", session),
                webhook("payment_finished", session, session_status="accepted"),
                webhook("payment_finished", session, payment_status="failed", error_code="05"),
                webhook("payment_refunded", session, session_status="accepted"),
                webhook("payout_finished", session),
            ]
        return payloads

    @staticmethod
    def _dumps(payload: Any) -> bytes:
        return json.dumps(payload).encode()

    def payload(self, rng: random.Random) -> dict[str, Any]:
        return json.loads(rng.choice(self.webhooks))


def serialise(rng: random.Random, document: Any) -> bytes:
    """``document`` as JSON, written one of several ways."""
    options: dict[str, Any] = rng.choice(
        [
            {},
            {"indent": 2},
            {"separators": (",", ":")},
            {"sort_keys": True},
            {"indent": "\t", "sort_keys": True},
        ]
    )
    if has_lone_surrogate(document) or rng.random() < 0.5:
        return json.dumps(document, **options).encode()  # \uXXXX escapes throughout
    return json.dumps(document, ensure_ascii=False, **options).encode("utf-8")


# --- generators -----------------------------------------------------------------------------


def random_bytes(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 2, rng.randint(0, 64), rng.randint(0, 4096)])
    alphabet = rng.choice([None, b'{}[]":,0123456789 \n\\tnulfrsae', b"\x00\xff\xfe\xef\xbb\xbf"])
    if alphabet is None:
        return rng.randbytes(size)
    return bytes(rng.choice(alphabet) for _ in range(size))


def garble(rng: random.Random, body: bytes) -> bytes:
    """A valid JSON body broken in one to five ways."""
    data = bytearray(body)
    for _ in range(rng.randint(1, 5)):
        if not data:
            break
        where = rng.randrange(len(data))
        match rng.randrange(8):
            case 0:
                del data[where:]  # truncated
            case 1:
                del data[where : where + rng.randint(1, 20)]
            case 2:
                data[where:where] = rng.choice([b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\"])
            case 3:
                data[where] = rng.randrange(256)
            case 4:
                data[where:where] = rng.randbytes(rng.randint(1, 8))
            case 5:
                data[where:where] = data[where : where + rng.randint(1, 40)]
            case 6:
                data[where:where] = rng.choice([b"NaN", b"-Infinity", b"\\ud800", b"\xff", b"\x00"])
            case _:
                data = data.replace(b'"', b"'", 1) if rng.random() < 0.5 else data.upper()
    return bytes(data)


def _set_anywhere(rng: random.Random, document: dict[str, Any], value: Any) -> None:
    """Put ``value`` at a random place inside ``document``."""
    target: Any = document
    for _ in range(rng.randint(0, 4)):
        children = [v for v in (target.values() if isinstance(target, dict) else target)]
        containers = [child for child in children if isinstance(child, dict | list)]
        if not containers:
            break
        target = rng.choice(containers)
    if isinstance(target, dict):
        target[rng.choice(["x", "note", "\ud800key", "PaReq", *list(target)[:3]])] = value
    else:
        target.append(value)


DEEP = "__deep__"


def deep(depth: int, leaf: str, *, shape: str = "list") -> bytes:
    """JSON text ``depth`` levels deep around ``leaf`` (JSON text), written without recursion."""
    if shape == "list":
        return ("[" * depth + leaf + "]" * depth).encode()
    return ('{"d":' * depth + leaf + "}" * depth).encode()


def not_a_webhook(rng: random.Random, material: Material) -> tuple[str, bytes]:
    """A JSON body that is not a webhook, named by what is wrong with it."""
    document: Any = material.payload(rng)
    session = document["session"]
    choice = rng.randrange(14)
    if choice == 0:
        kind = "wrong_type_field"
        document["type"] = rng.choice(WRONG_TYPES)
    elif choice == 1:
        kind = "missing_field"
        victim = rng.choice(["type", "session", "id", "all"])
        if victim == "id":
            del session["id"]
        elif victim == "all":
            document = {k: v for k, v in document.items() if k not in ("type", "session")}
        else:
            del document[victim]
    elif choice == 2:
        kind = "wrong_session"
        document["session"] = rng.choice(
            [None, "ps_1", 7, [], [session], True, {}, {"ID": "ps_1"}, {"session_id": "ps_1"}]
        )
    elif choice == 3:
        kind = "bad_session_id"
        session["id"] = rng.choice(BAD_IDS)
    elif choice == 4:
        kind = "non_object"
        document = rng.choice(
            [[document], "webhook", 42, None, True, [], [[["type"]]], rng.random(), "{}"]
        )
    elif choice == 5:
        kind = "lone_surrogate"
        _set_anywhere(rng, document, rng.choice(["\ud800", "x\udfffy", "\udbff\udbff", "\udc00"]))
    elif choice == 6:
        kind = "deep_nesting"
        depth = rng.choice([rng.randint(2, 100), rng.randint(800, 1100), rng.randint(1100, 30_000)])
        leaf = rng.choice(['"\\ud800"', "null", '"x"'])
        nested = deep(depth, leaf, shape=rng.choice(["list", "dict"]) if depth < 6000 else "list")
        where = rng.choice(["top", "type", "id", "beside"])
        if where == "top":
            return kind, nested
        if where == "type":
            document["type"] = DEEP
        elif where == "id":
            session["id"] = DEEP
        else:  # a webhook but for the lone surrogate at the bottom of a deep value
            document["deep"] = DEEP
            nested = deep(depth, '"\\ud800"', shape="list")
        return kind, serialise(rng, document).replace(f'"{DEEP}"'.encode(), nested)
    elif choice == 7:
        kind = "long_strings"
        size = rng.choice([257, 1000, 20_000, 60_000])
        field = rng.choice(["id", "type_and_id", "key"])
        session["id"] = rng.choice(["x", "я", "\U0001f4b3", " "]) * size
        if field == "type_and_id":
            document["type"] = "t" * size
        elif field == "key":
            document["k" * size] = "v" * (size // 2)
    elif choice == 8:
        kind = "nan_infinity"
        constant = rng.choice([math.nan, math.inf, -math.inf])
        target = rng.choice(["type", "session", "id"])
        if target == "id":
            session["id"] = constant
        else:
            document[target] = constant
        if rng.random() < 0.5:
            _set_anywhere(rng, document, constant)
    elif choice == 9:
        kind = "duplicate_keys"
        body = serialise(rng, document).rstrip()
        extra = rng.choice(
            [
                '"type": null',
                '"type": 5',
                '"type": ""',
                '"session": null',
                '"session": []',
                '"session": {"status": "accepted"}',
                '"session": {"id": "a b"}',
            ]
        )
        return kind, body[:-1] + b", " + extra.encode() + b"}"
    elif choice == 10:
        kind = "huge_numbers"
        digits = rng.choice([4301, 5000, 20_000])
        number = "9" * digits if rng.random() < 0.5 else "1e" + "9" * rng.randint(3, 50)
        text = serialise(rng, {**document, "type": "PLACEHOLDER"}).decode()
        return kind, text.replace('"PLACEHOLDER"', number).encode()
    elif choice == 11:
        kind = "non_utf8"
        body = serialise(rng, document)
        encoding = rng.choice(["latin-1-bytes", "utf-16", "utf-32", "cp1251", "cesu"])
        broken = rng.choice(BAD_IDS[13:])  # still not a webhook if the bytes were read right
        session["id"] = broken if isinstance(broken, str) else "ps x"
        text = json.dumps(document, ensure_ascii=False)
        if encoding == "latin-1-bytes":
            body = serialise(rng, document).replace(b'"type"', b'"typ\xe9\xff"', 1)
        elif encoding in ("utf-16", "utf-32"):
            body = text.encode(encoding, "surrogatepass")
        elif encoding == "cp1251":
            body = text.encode("cp1251", "replace")
        else:
            body = text.encode("utf-8", "surrogatepass")  # encoded lone surrogates
        return kind, body
    elif choice == 12:
        kind = "wrong_container_types"
        document["type"] = rng.choice(WRONG_TYPES[8:12])
        session["acquiring_payments"] = rng.choice([None, "x", 1, {}, [1, "a", None]])
    else:
        kind = "odd_text"
        session["id"] = rng.choice(BAD_IDS[13:]) + rng.choice(ODD_TEXT)
        document["type"] = rng.choice(ODD_TEXT + [None])
    return kind, serialise(rng, document)


def signature_variant(rng: random.Random, material: Material, body: bytes) -> list[tuple[str, str]]:
    """X-PARTNER-SIGN headers that must not verify ``body``."""
    real = material.sign(body)
    name = rng.choice(SIGNATURE_NAMES)
    choice = rng.randrange(20)
    if choice == 0:
        return []
    if choice == 1:
        return [(name, rng.choice(["", " ", "\t", "=", "==", "null", "None", "undefined"]))]
    if choice == 2:
        size = rng.randint(1, 600)
        return [(name, "".join(rng.choice(string.printable[:94]) for _ in range(size)))]
    if choice == 3:
        return [(name, "".join(chr(rng.randint(0xA0, 0x2FFF)) for _ in range(rng.randint(1, 40))))]
    if choice == 4:
        size = rng.choice([0, 1, 16, 128, 255, 257, 512, 4096])
        return [(name, base64.b64encode(rng.randbytes(size)).decode())]
    if choice == 5:  # the right length, junk
        return [(name, base64.b64encode(rng.randbytes(256)).decode())]
    if choice == 6:  # a real signature of other bytes
        other = rng.choice([w for w in material.webhooks if w != body] or [b"{}"])
        return [(name, material.sign(other))]
    if choice == 7:
        return [(name, material.sign(body[:-1] if len(body) > 1 else body + b" "))]
    if choice == 8:  # one character changed, still base64
        where = rng.randrange(len(real) - 4)  # not the last group: its spare bits are ignored
        swapped = rng.choice([c for c in B64 if c != real[where]])
        return [(name, real[:where] + swapped + real[where + 1 :])]
    if choice == 9:
        return [(name, real[: rng.randrange(len(real))])]
    if choice == 10:
        variant = real.replace("+", "-").replace("/", "_")
        if variant == real:
            variant = real.swapcase()
        return [(name, variant)]
    if choice == 11:
        return [(name, real.rstrip("=") + rng.choice(["", "A", "AB"]))]
    if choice == 12:  # a real signature by another key
        return [(name, sign(material.stranger, body))]
    if choice == 13:
        return [(name, real.swapcase())]
    if choice == 14:
        return [(name, rng.choice(["sha256=", "Signature ", "RSA ", "Bearer "]) + real)]
    if choice == 15:  # the real signature in a header of another name
        return [(rng.choice(LOOKALIKE_NAMES), real)]
    if choice == 16:
        return [(name, base64.b16encode(base64.b64decode(real)).decode())]
    if choice == 17:  # white space or a separator inside
        where = rng.randrange(1, len(real) - 2)
        return [(name, real[:where] + rng.choice([" ", "\t", ",", ";", "."]) + real[where:])]
    if choice == 18:  # several, none of them right
        return [(name, base64.b64encode(rng.randbytes(256)).decode()) for _ in range(2)] + [
            (rng.choice(SIGNATURE_NAMES), "!!")
        ]
    return [(name, base64.b64encode(real.encode()).decode())]


def with_content_type(
    rng: random.Random, headers: list[tuple[str, str]]
) -> tuple[tuple[str, str], ...]:
    content_type = rng.choice(CONTENT_TYPES) if rng.random() < 0.3 else "application/json"
    extra = [("Content-Type", content_type)] if content_type is not None else []
    return tuple(extra + headers)


def over_limit(rng: random.Random, material: Material) -> Case:
    size = rng.choice([LIMIT + 1, LIMIT + rng.randint(2, 5000), rng.randint(LIMIT, 4 * LIMIT)])
    size = max(size, LIMIT + 1)
    filler = rng.choice(["spaces", "random", "webhook_field"])
    base = rng.choice(material.webhooks)
    if filler == "spaces":  # still a valid webhook, just padded
        body = base + b" " * (size - len(base))
    elif filler == "random":
        body = rng.randbytes(size)
    else:
        document = json.loads(base)
        document["padding"] = "p" * size
        body = json.dumps(document).encode()
    signature = rng.choice(["real", "none", "junk"])
    headers: list[tuple[str, str]] = []
    if signature == "real":
        headers = [("X-PARTNER-SIGN", material.sign(body))]
    elif signature == "junk":
        headers = [("X-PARTNER-SIGN", base64.b64encode(rng.randbytes(256)).decode())]
    return Case("over_limit", body, TOO_LARGE, with_content_type(rng, headers))


def raw_transport(rng: random.Random, material: Material) -> Case:
    """What only a raw ASGI call can send, answered like anything else."""
    choice = rng.randrange(7)
    body = rng.choice(material.webhooks)
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
    chunks = 1
    expected = UNSIGNED
    if choice == 0:  # header bytes that are not UTF-8, NUL, DEL
        # (Not CR or LF: no HTTP server passes them on, and Quart's request cannot hold them.)
        junk = bytes(rng.choice(b"\x00\x80\xff\xfe\xc3\xa9\x7f\t ") for _ in range(20))
        headers.append((b"x-partner-sign", rng.choice([junk, material.sign(body).encode() + junk])))
    elif choice == 1:  # header names with odd bytes around the real one
        name = rng.choice(
            [
                b"x-partner-sign\x00",
                b"x-partner-sign ",
                b" x-partner-sign",
                b"x-partner-sign\xff",
                b"x-partner\xadsign",
                b"x-partner-sign:",
            ]
        )
        headers.append((name, material.sign(body).encode()))
    elif choice == 2:  # a Content-Length that is not a length, or lies
        length = rng.choice(
            [
                b"abc",
                b"-1",
                b"1e3",
                b" 12 ",
                b"0",
                b"1",
                b"12, 12",
                b"\xff",
                str(len(body) + 1).encode(),
                str(LIMIT * 2).encode(),
                b"9" * 40,
            ]
        )
        headers.append((b"content-length", length))
        expected = frozenset({401, 413})
    elif choice == 3:  # many pieces, some empty
        chunks = rng.randint(2, 50)
    elif choice == 4:  # over the limit in pieces, with no Content-Length to warn
        body = body + b" " * (LIMIT + rng.randint(1, 10_000) - len(body))
        headers.append((b"x-partner-sign", material.sign(body).encode()))
        chunks = rng.randint(1, 40)
        expected = TOO_LARGE
    elif choice == 5:  # signed malformed bodies with duplicate signature headers
        _, body = not_a_webhook(rng, material)
        answer = signed_answer(body)
        if answer is None or len(body) > LIMIT:
            return raw_transport(rng, material)
        pair = [material.sign(body).encode(), base64.b64encode(rng.randbytes(256))]
        rng.shuffle(pair)
        headers += [(b"x-partner-sign", value) for value in pair]
        expected = answer | UNSIGNED  # whichever one the app reads first
    else:  # a huge header value, and many headers
        headers.append((b"x-partner-sign", b"A" * rng.choice([8192, 65536])))
        headers += [(b"x-junk-%d" % n, b"v" * 100) for n in range(rng.randint(1, 200))]
    return Case("raw_transport", body, expected, raw_headers=tuple(headers), chunks=chunks)


def generate(material: Material) -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    signed_kinds: Counter[str] = Counter()

    def signed(kind: str, body: bytes, extra: tuple[tuple[str, str], ...] = ()) -> None:
        if len(body) > LIMIT:
            return
        answer = signed_answer(body)
        if answer is None:
            return
        signed_kinds[kind] += 1
        name = rng.choice(SIGNATURE_NAMES)
        value = material.sign(body)
        if rng.random() < 0.1:
            value = rng.choice([" ", "\t", ""]) + value + rng.choice([" ", "\t", ""])
        cases.append(Case(f"signed_{kind}", body, answer, extra + ((name, value),)))

    for _ in range(1200):
        cases.append(Case("random_bytes", random_bytes(rng), UNSIGNED))
    for _ in range(300):
        signed("random_bytes", random_bytes(rng), with_content_type(rng, []))
    for _ in range(1500):
        body = garble(rng, rng.choice(material.webhooks))
        sig = signature_variant(rng, material, body) if rng.random() < 0.3 else []
        cases.append(Case("garbled_json", body, UNSIGNED, with_content_type(rng, sig)))
    for _ in range(1000):
        signed("garbled_json", garble(rng, rng.choice(material.webhooks)))
    for _ in range(600):
        kind, body = not_a_webhook(rng, material)
        if len(body) <= LIMIT:
            cases.append(Case(kind, body, UNSIGNED, with_content_type(rng, [])))
    for _ in range(2600):
        kind, body = not_a_webhook(rng, material)
        signed(kind, body, with_content_type(rng, []))
    for depth in range(850, 1_050):  # every depth around the parser's limit, once
        head = f'{{"type": "x", "session": {{"id": "ps_{depth}"}}, "deep": '
        signed("deep_nesting_sweep", head.encode() + deep(depth, '"\\ud800"') + b"}")
    for _ in range(3000):
        body = rng.choice(material.webhooks)
        headers = signature_variant(rng, material, body)
        query = ""
        if rng.random() < 0.05:
            query = "X-PARTNER-SIGN=" + quote(material.sign(body), safe="")
        cases.append(
            Case("bad_signature", body, UNSIGNED, with_content_type(rng, headers), query=query)
        )
    for _ in range(500):
        content_type = rng.choice(CONTENT_TYPES)
        headers = () if content_type is None else (("Content-Type", content_type),)
        if rng.random() < 0.5:
            body = rng.choice(material.webhooks)
            cases.append(Case("content_type", body, UNSIGNED, headers))
        else:
            signed("content_type", not_a_webhook(rng, material)[1], headers)
    for _ in range(240):
        cases.append(over_limit(rng, material))
    for filler in (b" ", b"\n"):  # exactly the limit is still read (and then refused)
        body = rng.choice(material.webhooks)
        cases.append(Case("at_limit", body + filler * (LIMIT - len(body)), UNSIGNED))
    for _ in range(800):
        cases.append(raw_transport(rng, material))
    return cases


# --- running --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    body: bytes


async def through_client(client: Any, case: Case) -> Answer:
    path = URL + (f"?{case.query}" if case.query else "")
    response = await client.post(path, data=case.body, headers=Headers(list(case.headers)))
    return Answer(response.status_code, response.mimetype, await response.get_data())


async def through_asgi(app: Quart, case: Case) -> Answer:
    assert case.raw_headers is not None
    size = max(1, math.ceil(len(case.body) / case.chunks))
    pieces = [case.body[i : i + size] for i in range(0, len(case.body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": piece, "more_body": number < len(pieces) - 1}
        for number, piece in enumerate(pieces)
    ]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await never.wait()  # the client stays connected until the answer is sent
        raise AssertionError("unreachable")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": URL,
        "raw_path": URL.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bridge.test"), *case.raw_headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "extensions": {},
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    content_type = dict(start["headers"]).get(b"content-type", b"").decode("latin-1")
    return Answer(start["status"], content_type.split(";")[0].strip(), body)


def problem_with(answer: Answer, case: Case) -> str | None:
    if answer.status >= 500:
        return f"server error {answer.status}"
    if answer.status not in ERROR_STATUSES:
        return f"answered {answer.status}, not one of {sorted(ERROR_STATUSES)}"
    if answer.status not in case.expected:
        return f"answered {answer.status}, expected {sorted(case.expected)}"
    if answer.content_type != "application/json":
        return f"error body is {answer.content_type!r}, not JSON"
    try:
        document = json.loads(answer.body)
    except ValueError:
        return f"error body is not JSON: {answer.body[:100]!r}"
    error = document.get("error") if isinstance(document, dict) else None
    if (
        set(document) != {"error"}
        or not isinstance(error, dict)
        or set(error) != {"code", "message"}
        or not isinstance(error["code"], str)
        or not error["code"]
        or not isinstance(error["message"], str)
    ):
        return f"error body is not {{error: {{code, message}}}}: {answer.body[:200]!r}"
    return None


@pytest.fixture(scope="module")
def cases(provider_key: rsa.RSAPrivateKey) -> list[Case]:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return generate(Material(provider_key, stranger))


def test_the_generator_makes_enough_cases_of_every_kind(cases: list[Case]) -> None:
    kinds = Counter(case.kind for case in cases)
    assert len(cases) >= MINIMUM_CASES, kinds
    signed = sum(n for kind, n in kinds.items() if kind.startswith("signed_"))
    assert signed >= 2500, kinds
    for kind in (
        "random_bytes",
        "garbled_json",
        "bad_signature",
        "content_type",
        "over_limit",
        "raw_transport",
        "signed_random_bytes",
        "signed_garbled_json",
        "signed_wrong_type_field",
        "signed_missing_field",
        "signed_wrong_session",
        "signed_bad_session_id",
        "signed_non_object",
        "signed_lone_surrogate",
        "signed_deep_nesting",
        "signed_deep_nesting_sweep",
        "signed_long_strings",
        "signed_nan_infinity",
        "signed_duplicate_keys",
        "signed_huge_numbers",
        "signed_non_utf8",
        "signed_content_type",
    ):
        assert kinds[kind] >= 20, (kind, kinds)
    assert {400, 422} <= {status for case in cases for status in case.expected}


async def test_malformed_webhooks_get_4xx_json_errors_and_store_nothing(
    app: Quart,
    client: Any,
    config: dict[str, Any],
    cases: list[Case],
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[str] = []
    seen: Counter[int] = Counter()
    started = time.perf_counter()
    with caplog.at_level(logging.ERROR):
        for number, case in enumerate(cases):
            try:
                if case.raw_headers is not None:
                    answer = await through_asgi(app, case)
                else:
                    answer = await through_client(client, case)
            except Exception as error:  # a crash through the whole stack
                failures.append(f"#{number} crashed with {error!r}: {case.describe()}")
                continue
            seen[answer.status] += 1
            if (problem := problem_with(answer, case)) is not None:
                failures.append(f"#{number} {problem}: {case.describe()}")
    elapsed = time.perf_counter() - started
    logging.getLogger(__name__).warning("%d cases in %.1f s: %s", len(cases), elapsed, seen)

    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures[:25])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors[:10]
    assert set(seen) <= ERROR_STATUSES and sum(seen.values()) == len(cases)
    assert await query(config["DATABASE_URL"], "SELECT count(*) FROM webhooks") == [(0,)]
    assert await query(config["DATABASE_URL"], "SELECT count(*) FROM sessions") == [(0,)]


async def test_after_the_barrage_a_signed_webhook_is_still_stored(
    app: Quart, client: Any, config: dict[str, Any], provider_key: rsa.RSAPrivateKey
) -> None:
    """The fuzzing's premise: the same key and route store a good webhook, so an empty table
    above means the bad ones were refused, not that nothing could have been stored."""
    body = json.dumps(webhook("action_required", "ps_control")).encode()
    headers = {"Content-Type": "application/json", "X-PARTNER-SIGN": sign(provider_key, body)}
    response = await client.post(URL, data=body, headers=headers)
    assert response.status_code == 200
    assert await query(config["DATABASE_URL"], "SELECT session_id FROM webhooks") == [
        ("ps_control",)
    ]


# --- odd but legal: signed webhooks are stored whatever text they carry ---------------------

ODD_VALUES = [
    "\x00",
    "a\x00b",
    "\U0001f4b3",
    "\u2028",
    "\ufeff",
    "é\u0301",
    "\u202eRTL",
    "<b>&amp;</b>",
    "' OR '1'='1",
    "%00",
    "\\",
    '"',
    "x" * 10_000,
]
ODD_IDS = ["ps_é", "ps_\U0001f4b3", "ps_%41", "ps_?x=1", "ps_#frag", "ps_'\"<>", "ps_" + "z" * 240]


def _first_payment(document: dict[str, Any]) -> dict[str, Any]:
    return document["session"]["acquiring_payments"][0]


# Where an odd value goes: (name, webhook kind, its fields, how to put the value in).
Template = tuple[str, str, Callable[[str], dict[str, Any]], Callable[[dict[str, Any], str], None]]
TEMPLATES: list[Template] = [
    ("type", "payout_finished", lambda v: {}, lambda d, v: d.__setitem__("type", "x" + v)),
    (
        "session status",
        "payment_finished",
        lambda v: {},
        lambda d, v: d["session"].__setitem__("status", v),
    ),
    (
        "error code of a failed payment (the reason)",
        "payment_finished",
        lambda v: {"payment_status": "failed", "error_code": v},
        lambda d, v: None,
    ),
    (
        "error code of a session in error (the reason)",
        "payment_finished",
        lambda v: {"session_status": "error", "error_code": v},
        lambda d, v: None,
    ),
    (
        "PaReq and MD",
        "action_required",
        lambda v: {"interaction": redirect(params={"PaReq": v, "MD": v})},
        lambda d, v: None,
    ),
    (
        "bank URL",
        "action_required",
        lambda v: {"interaction": redirect(url="https://acs.bank.test/" + v, base_url=None)},
        lambda d, v: None,
    ),
    ("QR content", "action_required", lambda v: {"interaction": inform(v)}, lambda d, v: None),
    (
        "payment id",
        "ready_to_capture",
        lambda v: {},
        lambda d, v: _first_payment(d).__setitem__("id", v),
    ),
    (
        "currency",
        "payment_refunded",
        lambda v: {"session_status": "accepted"},
        lambda d, v: _first_payment(d)["amount_details"].__setitem__("currency", v),
    ),
    ("unknown field", "ready_to_confirm", lambda v: {}, lambda d, v: d.__setitem__(v, v)),
]


def odd_webhooks() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Every odd value in every place: (what it is, session id, webhook)."""
    number = 0
    for name, kind, fields, put in TEMPLATES:
        for value in ODD_VALUES:
            session_id = ODD_IDS[number % len(ODD_IDS)] + f"_{number}"
            number += 1
            document = webhook(kind, session_id, **fields(value))
            put(document, value)
            yield f"{name} = {value[:20]!r}", session_id, document


async def test_signed_webhooks_with_odd_but_legal_text_never_get_a_5xx(
    provider: Provider, partner: Partner, client: Any, config: dict[str, Any]
) -> None:
    """NUL, emoji, RTL marks, quotes, 10,000-character values: a webhook carrying them is stored
    (or, for text the storage cannot keep, refused with 422) on both engines, and the session's
    pages and answers never fail."""
    failures: list[str] = []
    stored = 0
    for what, session_id, document in odd_webhooks():
        response = await provider.send(json.dumps(document).encode())
        if response.status_code == 200:
            stored += 1
        elif response.status_code != 422:
            failures.append(f"webhook with {what}: {response.status_code}")
            continue
        quoted = quote(session_id, safe="")
        minted = await client.post(f"/api/v1/sessions/{quoted}/tokens", headers=partner.headers)
        if minted.status_code != 201:
            failures.append(f"{what}: token {minted.status_code} for {session_id[:20]!r}")
            continue
        token = (await minted.get_json())["token"]
        for label, path in (
            ("session answer", f"/api/v1/sessions/{quoted}"),
            ("status answer", f"/api/v1/status/{token}"),
            ("pay page", f"/pay/{token}"),
        ):
            answer = await client.get(path, headers=partner.headers)
            # 502 is the pay page's answer to a bank instruction it refuses to render
            refused = label == "pay page" and answer.status_code == 502
            if answer.status_code >= 500 and not refused:
                failures.append(f"{what}: {label} {answer.status_code}")
    assert not failures, "\n".join(failures[:20])
    count = await query(config["DATABASE_URL"], "SELECT count(*) FROM webhooks")
    assert count == [(stored,)]
    assert stored > 0
