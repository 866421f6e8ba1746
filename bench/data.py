"""What the benchmark feeds the bridge: a provider key, signed webhooks, sessions and tokens."""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.signature import sign
from tests.payloads import webhook


@dataclass(frozen=True)
class Credentials:
    """The secrets of one benchmark run: made fresh each time, never written anywhere lasting."""

    private_pem: bytes
    public_pem: str
    secret: str
    api_key: str

    @classmethod
    def fresh(cls) -> Credentials:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(
            private_pem=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            public_pem=key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode(),
            secret=secrets.token_urlsafe(32),
            api_key=secrets.token_urlsafe(24),
        )

    def private_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key


def webhook_body(session_id: str, kind: str = "action_required") -> bytes:
    """A webhook as Smart Glocal sends it (the suite's own payloads), compact JSON."""
    return json.dumps(webhook(kind, session_id), separators=(", ", ": ")).encode()


def _sign_chunk(private_pem: bytes, session_ids: list[str]) -> list[str]:
    key = serialization.load_pem_private_key(private_pem, password=None)
    lines = []
    for session_id in session_ids:
        body = webhook_body(session_id)
        lines.append(f"{sign(key, body)}\t{body.decode()}")  # type: ignore[arg-type]
    return lines


def signed_webhooks(credentials: Credentials, prefix: str, count: int, path: Path) -> Path:
    """``count`` distinct signed ``action_required`` webhooks, one ``signature<TAB>body`` a line,
    each for a new session (``{prefix}{n}``), signed on every core."""
    ids = [f"{prefix}{number}" for number in range(count)]
    chunk = 500
    chunks = [ids[start : start + chunk] for start in range(0, count, chunk)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool, path.open("w") as out:
        for lines in pool.map(_sign_chunk, [credentials.private_pem] * len(chunks), chunks):
            out.write("\n".join(lines) + "\n")
    return path


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(url)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def mint(base_url: str, credentials: Credentials, session_id: str) -> str:
    """A customer token through the partner API, as a partner's backend gets one."""
    status, body = http(
        "POST",
        f"{base_url}/api/v1/sessions/{session_id}/tokens",
        headers={"Authorization": f"Bearer {credentials.api_key}"},
    )
    if status != 201:
        raise RuntimeError(f"minting a token answered {status}: {body[:200]!r}")
    return json.loads(body)["token"]


def deliver(base_url: str, credentials: Credentials, session_id: str, kind: str) -> None:
    body = webhook_body(session_id, kind)
    status, answer = http(
        "POST",
        f"{base_url}/webhooks/smart-glocal",
        body,
        {
            "Content-Type": "application/json",
            "X-PARTNER-SIGN": sign(credentials.private_key(), body),
        },
    )
    if status != 200:
        raise RuntimeError(f"the webhook answered {status}: {answer[:200]!r}")


@dataclass(frozen=True)
class Prepared:
    """A session waiting for the customer: its token, its bank page and its status answer."""

    session_id: str
    token: str
    page: bytes
    status_answer: bytes


def prepare_session(base_url: str, credentials: Credentials) -> Prepared:
    """Mint a token and deliver ``action_required``, through the bridge's real API, so
    ``/pay/{token}`` renders the bank form and the status answer says ``action_required``."""
    session_id = f"ps_bench_page_{int(time.time() * 1000)}"
    token = mint(base_url, credentials, session_id)
    deliver(base_url, credentials, session_id, "action_required")
    status, page = http("GET", f"{base_url}/pay/{token}")
    if status != 200 or b'id="bank-form"' not in page:
        raise RuntimeError(f"/pay/{{token}} did not render the bank form ({status})")
    status, answer = http("GET", f"{base_url}/api/v1/status/{token}")
    if status != 200 or json.loads(answer)["status"] != "action_required":
        raise RuntimeError(f"the status route answered {status}: {answer[:200]!r}")
    return Prepared(session_id, token, page, answer)
