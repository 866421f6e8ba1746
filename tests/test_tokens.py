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
    tampered = [
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token + "x",
        "x" + token,
        token + "!!!!",  # itsdangerous's base64 would read past these to the same signature
        token + "~" * 5000,
        token.replace(".", "..", 1),
    ]
    for copy in tampered:
        assert reader.read(copy) is None, copy
    assert list(reader._known) == [token]  # nothing but the real token is remembered


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


def test_the_longest_session_ids_make_tokens_that_read_back() -> None:
    reader = Tokens([SECRET], 60, FakeClock())
    for session_id in (
        "p",
        "a" * 256,
        "платёж" * 42 + "ж" * 4,
        "".join(map(chr, range(0x4E00, 0x4F00))),
    ):
        assert len(session_id) <= 256
        assert reader.read(reader.mint(session_id).token) == Grant(session_id, reader._clock())
