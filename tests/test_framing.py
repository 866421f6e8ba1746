"""What answer headers and earlier customers say of a bank origin's frames (pure)."""

from __future__ import annotations

import pytest

from app.framing import STALLS_TO_LEARN, BankRecord, Frames, refused_by, verdict


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ([], False),
        ([("X-Frame-Options", "DENY")], True),
        ([("x-frame-options", "sameorigin")], True),
        ([("X-Frame-Options", "ALLOW-FROM https://shop.example")], False),  # browsers ignore it
        ([("X-Frame-Options", "nonsense")], False),
        ([("Content-Security-Policy", "frame-ancestors 'none'")], True),
        ([("Content-Security-Policy", "frame-ancestors 'self'")], True),
        ([("Content-Security-Policy", "default-src 'self'; frame-ancestors")], True),
        ([("Content-Security-Policy", "frame-ancestors https://acs.bank.example")], True),
        ([("Content-Security-Policy", "frame-ancestors *")], False),
        ([("Content-Security-Policy", "frame-ancestors https:")], False),
        ([("Content-Security-Policy", "default-src 'self'")], False),
        # frame-ancestors overrides X-Frame-Options, as in Chromium.
        ([("X-Frame-Options", "DENY"), ("Content-Security-Policy", "frame-ancestors *")], False),
        # Every policy applies: one that refuses is enough.
        ([("Content-Security-Policy", "frame-ancestors *, frame-ancestors 'none'")], True),
        ([("Content-Security-Policy-Report-Only", "frame-ancestors 'none'")], False),
    ],
)
def test_refusals_are_read_as_chromium_reads_them(
    headers: list[tuple[str, str]], refused: bool
) -> None:
    assert refused_by(headers) is refused


def test_what_the_script_is_told() -> None:
    origin = "https://acs.bank.example"
    assert verdict(None) is Frames.UNKNOWN
    assert verdict(BankRecord(origin)) is Frames.UNKNOWN
    assert verdict(BankRecord(origin, headers=Frames.REFUSED)) is Frames.REFUSED
    assert verdict(BankRecord(origin, headers=Frames.ALLOWED)) is Frames.ALLOWED
    # Customers who waited in vain while others came back through a window teach a refusal
    # the headers did not show (a bank that refuses only its form's answer).
    learned = BankRecord(
        origin, headers=Frames.ALLOWED, stalled=STALLS_TO_LEARN, windowed_returns=1
    )
    assert verdict(learned) is Frames.REFUSED
    assert verdict(BankRecord(origin, stalled=STALLS_TO_LEARN - 1, windowed_returns=5)) is (
        Frames.UNKNOWN
    )
    assert verdict(BankRecord(origin, stalled=STALLS_TO_LEARN)) is Frames.UNKNOWN
    # One customer back inside a frame proves frames work there, whatever else was seen.
    framed = BankRecord(
        origin, headers=Frames.REFUSED, stalled=9, framed_returns=1, windowed_returns=9
    )
    assert verdict(framed) is Frames.ALLOWED
