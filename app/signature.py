"""``X-PARTNER-SIGN``: RSA PKCS#1 v1.5 with SHA-256 over the raw body, base64-encoded."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

HEADER = "X-PARTNER-SIGN"


def verify(keys: Sequence[RSAPublicKey], body: bytes, signature: str | None) -> bool:
    """Whether any of ``keys`` (several during a rotation) signed exactly these ``body`` bytes."""
    if not signature:
        return False
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    for key in keys:
        try:
            key.verify(raw, body, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            continue
        return True
    return False


def sign(key: RSAPrivateKey, body: bytes) -> str:
    """The header value the provider sends for ``body`` (used by the demo and the tests)."""
    return base64.b64encode(key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")
