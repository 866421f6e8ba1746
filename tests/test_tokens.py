"""Customer tokens, read many times: what a remembered verification may and may not skip."""

from __future__ import annotations

import string
from random import Random

import pytest
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


def test_a_token_may_carry_a_return_url_and_reads_it_back() -> None:
    clock = FakeClock()
    reader = Tokens([SECRET], 60, clock)
    token = reader.mint("ps_1", "https://shop.test/back?x=1").token
    assert reader.read(token) == Grant("ps_1", clock.now, "https://shop.test/back?x=1")
    assert reader.read(token) == Grant("ps_1", clock.now, "https://shop.test/back?x=1")  # known
    assert reader.read(reader.mint("ps_1").token) == Grant("ps_1", clock.now, None)
    clock.advance(61)
    assert reader.read(token) is None


def test_a_token_of_the_session_id_alone_is_the_shape_tokens_always_had() -> None:
    clock = FakeClock()
    reader = Tokens([SECRET], 60, clock)
    signer = reader._serializer
    assert reader.mint("ps_1").token == signer.dumps("ps_1")  # what every older token is
    assert reader.read(signer.dumps("ps_1")) == Grant("ps_1", clock.now)


def test_signed_values_of_other_shapes_grant_nothing() -> None:
    clock = FakeClock()
    reader = Tokens([SECRET], 60, clock)
    signer = reader._serializer
    for value in (
        ["ps_1", "https://shop.test/", "more"],
        ["ps_1", 7],
        [7, "https://shop.test/"],
        ["ps_1", None],
        [],
        {"ps_1": "https://shop.test/"},
        7,
        None,
    ):
        assert reader.read(signer.dumps(value)) is None, value
    assert reader._known == {}


def test_a_tampered_copy_of_a_token_with_a_return_url_is_refused() -> None:
    reader = Tokens([SECRET], 60, FakeClock())
    token = reader.mint("ps_1", "https://shop.test/" + "x" * 500).token
    assert reader.read(token) is not None
    for copy in (token[:-1] + ("A" if token[-1] != "A" else "B"), token + "x", "x" + token):
        assert reader.read(copy) is None, copy
    assert list(reader._known) == [token]


def test_the_longest_session_id_and_return_url_make_a_token_within_the_bound() -> None:
    """Incompressible on purpose: the bound must hold whatever zlib makes of the payload."""
    reader = Tokens([SECRET], 60, FakeClock())
    random = Random(7)
    session_id = "".join(chr(random.randrange(0x10000, 0x10FFFF)) for _ in range(256))
    alphabet = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?[]"
    url = "https://shop.test/" + "".join(random.choice(alphabet) for _ in range(2048 - 18))
    token = reader.mint(session_id, url).token
    assert len(token) <= tokens._LONGEST
    assert reader.read(token) == Grant(session_id, reader._clock(), url)
    assert len(reader.mint(session_id).token) <= tokens._LONGEST
    with pytest.raises(ValueError):  # a token that could never be read is never minted
        reader.mint("ps_1", "".join(random.choice(alphabet) for _ in range(tokens._LONGEST)))
