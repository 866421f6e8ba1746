"""The README's way to receive the relay, run as written against messages a real relay sent."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import WebhookVerificationError

from .conftest import RELAY_SECRET, Configured, FakeClock
from .partner import Partner, recording_partner
from .test_relay import relay_events

README = Path(__file__).resolve().parent.parent / "README.md"


def snippet() -> str:
    text = README.read_text()
    section = text[text.index("### Receiving the relay") :]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found, "the README shows no Python receiver"
    return found[1]


@pytest.fixture
def partner_backend() -> Iterator[Partner]:
    with recording_partner() as backend:
        yield backend


async def test_the_readmes_receiver_knows_each_message_again_and_refuses_a_forgery(
    configured: Configured,
    partner_backend: Partner,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BRIDGE_RELAY_SECRET", RELAY_SECRET)
    receiver: dict[str, Any] = {}
    exec(compile(snippet(), "README.md", "exec"), receiver)  # noqa: S102 - the README's own code
    receive = receiver["receive"]
    partner_backend.answer = lambda received: 500 if not partner_backend.received else 200
    async with configured(RELAY_URL=partner_backend.url, RELAY_EVENTS="provider bridge") as bridge:
        await bridge.provider.deliver("ready_to_confirm", next_action="confirm")
        await relay_events(bridge, 1)  # the first attempt's outcome is stored, its retry set
        clock.advance(5)  # past the first retry's pause: the same message again
        bridge.app.extensions["bridge"].relay.wake()
        received = await partner_backend.arrived(3)
    messages = [receive(item.body, item.headers) for item in received]
    assert messages[0][1]["type"] == "ready_to_confirm"
    assert messages[1] == messages[0]  # the retry of the first: its id says it is no news
    assert messages[2][1]["type"] == "session.updated"
    assert messages[2][1]["data"]["next_action"] == "confirm"
    assert len({message_id for message_id, _ in messages}) == 2
    forged = dict(received[2].headers, **{"webhook-id": "msg_forged"})
    with pytest.raises(WebhookVerificationError):
        receive(received[2].body, forged)
    with pytest.raises(WebhookVerificationError):
        receive(received[2].body.replace(b"confirm", b"capture"), received[2].headers)
