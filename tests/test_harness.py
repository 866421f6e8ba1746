"""The harness that runs real servers for the tests cleans up after itself."""

from __future__ import annotations

import pytest

from . import servers
from .servers import Served, environment


def test_a_server_that_never_gets_ready_is_not_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a busy machine a bridge may miss the deadline: the process is ended with the error,
    not left running into the tests after it (where it surfaced as another test's error)."""
    monkeypatch.setattr(servers, "START_SECONDS", 0.5)
    never_ready = Served(environment(), prefix=["sh", "-c", "sleep 600", "--"])
    with pytest.raises(RuntimeError, match="did not start"):
        never_ready.start()
    assert never_ready.process is not None and never_ready.process.poll() is not None
