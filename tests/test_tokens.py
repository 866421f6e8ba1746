"""Customer tokens, read many times: what a remembered verification may and may not skip."""

from __future__ import annotations

from itsdangerous import URLSafeTimedSerializer

from app import tokens
from app.tokens import Grant, Tokens
from tests.conftest import FakeClock

SECRET = "a-secret-for-tokens-0123456789"


def test_a_token_read_again_is_still_checked_for_expiry() -> None:
    clock = FakeClock()
    reader = Tokens([SECRET], 60, clock)
    token = reader.mint("ps_1").token
    assert reader.read(token) == Grant("ps_1", clock.now)
    clock.advance(60)
    assert reader.read(token) == Grant("ps_1", clock.now - 60)
    clock.advance(1)
    assert reader.read(token) is None
    clock.advance(-3600)  # a clock set back: the token is from the future now
    assert reader.read(token) is None


def test_a_token_that_verified_does_not_vouch_for_a_tampered_copy() -> None:
    reader = Tokens([SECRET], 60, FakeClock())
    token = reader.mint("ps_1").token
    assert reader.read(token) is not None
    for tampered in (token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x", "x" + token):
        assert reader.read(tampered) is None


def test_only_tokens_that_verified_are_remembered_and_never_too_many(monkeypatch) -> None:
    monkeypatch.setattr(tokens, "KNOWN_TOKENS", 3)
    clock = FakeClock()
    reader = Tokens([SECRET], 60, clock)
    for number in range(10):
        assert reader.read(f"not-a-token-{number}") is None
    assert reader._known == {}
    minted = [reader.mint(f"ps_{number}").token for number in range(5)]
    assert all(reader.read(token) for token in minted)
    assert list(reader._known) == minted[2:]
    assert reader.read(minted[0]) == Grant("ps_0", clock.now)  # forgotten, verified again


def test_a_signed_value_that_is_not_a_session_id_grants_nothing() -> None:
    clock = FakeClock()
    signer = Tokens([SECRET], 60, clock)._serializer
    assert isinstance(signer, URLSafeTimedSerializer)
    reader = Tokens([SECRET], 60, clock)
    assert reader.read(signer.dumps({"session_id": "ps_1"})) is None
    assert reader.read(signer.dumps(["ps_1"])) is None
