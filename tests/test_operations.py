"""Operability: request ids, structured logs, rate limits, metrics."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app import logs
from app.logs import JSONFormatter
from app.signature import sign

from .conftest import Configured, Partner
from .payloads import webhook


async def test_every_answer_carries_a_request_id(client: Any) -> None:
    fresh = await client.get("/healthz")
    again = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", fresh.headers["X-Request-ID"])
    assert again.headers["X-Request-ID"] != fresh.headers["X-Request-ID"]
    kept = await client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.1"})
    assert kept.headers["X-Request-ID"] == "lb-7f3a.1"
    refused = await client.get("/healthz", headers={"X-Request-ID": "<script> and spaces"})
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", refused.headers["X-Request-ID"])


def test_log_lines_are_json_objects_with_the_request_id() -> None:

    record = logging.LogRecord(
        "app.webhooks", logging.INFO, __file__, 1, "webhook %s", ("ok",), None
    )
    token = logs._REQUEST_ID.set("req-1")
    try:
        line = JSONFormatter().format(record)
    finally:
        logs._REQUEST_ID.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "webhook ok"
    assert entry["request_id"] == "req-1"
    assert (entry["level"], entry["logger"]) == ("info", "app.webhooks")


async def test_log_lines_written_while_a_request_is_handled_carry_its_id(
    provider: Any, client: Any
) -> None:
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)  # setLevel, not .level: loggers cache what is enabled
    try:
        body = json.dumps(webhook("action_required")).encode()
        headers = {"Content-Type": "application/json", "X-Request-ID": "trace-42"}
        headers["X-PARTNER-SIGN"] = sign(provider.key, body)
        answer = await client.post("/webhooks/smart-glocal", data=body, headers=headers)
        assert answer.headers["X-Request-ID"] == "trace-42"
        await client.get("/pay/not-a-token")  # another request, another id, no log line
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    entries = [json.loads(line) for line in lines.getvalue().splitlines()]
    accepted = [entry for entry in entries if entry["message"].startswith("webhook accepted")]
    assert [entry["request_id"] for entry in accepted] == ["trace-42"]
    assert all(entry.get("request_id") for entry in entries)


async def test_the_status_api_is_rate_limited_per_token(configured: Configured) -> None:
    async with configured(STATUS_RATE_LIMIT="3") as bridge:
        token = await bridge.partner.token()
        other = await bridge.partner.token("ps_other")
        answers = [await bridge.client.get(f"/api/v1/status/{token}") for _ in range(4)]
        assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
        limited = answers[-1]
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await limited.get_json())["error"]["code"] == "too_many_requests"
        assert (await bridge.client.get(f"/api/v1/status/{other}")).status_code == 200


async def test_token_minting_is_rate_limited_per_partner_key(configured: Configured) -> None:
    async with configured(TOKEN_RATE_LIMIT="2") as bridge:
        codes = []
        for number in range(3):
            response = await bridge.client.post(
                f"/api/v1/sessions/ps_{number}/tokens", headers=bridge.partner.headers
            )
            codes.append(response.status_code)
        assert codes == [201, 201, 429]


async def test_zero_switches_a_limit_off(configured: Configured) -> None:
    async with configured(STATUS_RATE_LIMIT="0") as bridge:
        token = await bridge.partner.token()
        codes = {
            (await bridge.client.get(f"/api/v1/status/{token}")).status_code for _ in range(200)
        }
        assert codes == {200}


async def test_metrics_count_what_operators_watch(
    provider: Any, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    await client.get(f"/api/v1/status/{token}")
    await client.get("/api/v1/status/not-a-token")
    text = await (await client.get("/metrics")).get_data(as_text=True)
    assert 'bridge_webhooks_total{outcome="accepted",type="action_required"} 1.0' in text
    assert 'bridge_status_transitions_total{status="action_required"} 1.0' in text
    assert "bridge_token_failures_total 1.0" in text
    assert (
        'bridge_request_duration_seconds_count{method="GET",route="/api/v1/status/<token>",'
        'status="200"} 1.0' in text
    )
    assert "bridge_long_poll_waiters 0.0" in text


async def test_made_up_methods_and_paths_add_no_metric_series(client: Any) -> None:
    for number in range(5):
        await client.open(f"/nothing/{number}", method=f"BREW{number}")
    text = await (await client.get("/metrics")).get_data(as_text=True)
    assert "BREW" not in text and "/nothing/" not in text
    assert (
        'bridge_request_duration_seconds_count{method="other",route="unmatched",status="404"} 5.0'
        in text
    )


@pytest.mark.parametrize("value", ["-1", "lots"])
async def test_a_bad_limit_names_its_variable(value: str, environ_ok: dict[str, str]) -> None:
    from app.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="^BRIDGE_STATUS_RATE_LIMIT: "):
        load_settings({**environ_ok, "BRIDGE_STATUS_RATE_LIMIT": value})


@pytest.fixture
def environ_ok(config: dict[str, Any]) -> dict[str, str]:
    return {
        "BRIDGE_SECRET_KEY": config["SECRET_KEY"],
        "BRIDGE_SG_PUBLIC_KEY": config["SG_PUBLIC_KEY"],
    }


def test_the_rate_limiter_allows_a_burst_then_one_request_per_interval() -> None:
    from app.errors import refusal
    from app.limits import RateLimiter
    from app.refusals import TooManyRequestsError

    now = [0.0]
    limiter = RateLimiter(6, clock=lambda: now[0])  # 6 at once, then one every 10 s
    for _ in range(6):
        limiter.check("a")
    with pytest.raises(TooManyRequestsError) as refused:
        limiter.check("a")
    answer = refusal(refused.value)
    assert answer is not None
    assert (answer.status, answer.headers) == (429, {"Retry-After": "10"})
    limiter.check("b")  # keys are counted apart
    now[0] = 9.9
    with pytest.raises(TooManyRequestsError):
        limiter.check("a")
    now[0] = 10.0
    limiter.check("a")
    RateLimiter(0).check("a")  # 0: no limit at all


async def test_latency_by_status_code_and_long_polls_apart(
    provider: Any, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await client.get(f"/api/v1/status/{token}")
    await client.get("/api/v1/status/not-a-token")
    await client.get(f"/api/v1/status/{token}?wait=1")  # held a second: nothing changes
    text = await (await client.get("/metrics")).get_data(as_text=True)
    route = 'method="GET",route="/api/v1/status/<token>"'
    assert f'bridge_request_duration_seconds_count{{{route},status="200"}} 1.0' in text
    assert f'bridge_request_duration_seconds_count{{{route},status="404"}} 1.0' in text
    assert "bridge_long_poll_duration_seconds_count 1.0" in text
    assert 'bridge_long_poll_duration_seconds_bucket{le="0.5"} 0.0' in text
    assert 'bridge_long_poll_duration_seconds_bucket{le="2.5"} 1.0' in text


async def test_webhooks_that_changed_nothing_are_counted_apart(provider: Any, client: Any) -> None:
    await provider.deliver("ready_to_confirm", updated_at="2027-01-15T07:01:00Z")
    await provider.deliver("action_required", updated_at="2027-01-15T07:00:00Z")  # older
    text = await (await client.get("/metrics")).get_data(as_text=True)
    assert 'bridge_webhooks_total{outcome="accepted",type="action_required"} 1.0' in text
    assert 'bridge_webhooks_unchanged_total{type="action_required"} 1.0' in text
    assert 'bridge_webhooks_unchanged_total{type="ready_to_confirm"} 0.0' in text


async def test_each_status_change_is_one_log_line(
    provider: Any, client: Any, caplog: pytest.LogCaptureFixture, clock: Any
) -> None:
    with caplog.at_level(logging.INFO, logger="app.bridge"):
        await provider.deliver("ready_to_confirm", updated_at="2027-01-15T07:00:00Z")
        await provider.deliver("action_required", updated_at="2027-01-15T07:01:00Z")
        clock.advance(3601)
        bridge = client.app.extensions["bridge"]
        assert await bridge.sweep() == 1
    said = [record.getMessage() for record in caplog.records if record.name == "app.bridge"]
    assert said == [
        "session ps_1: new -> in_progress",
        "session ps_1: in_progress -> action_required",
        "session ps_1: the action window ended",
        "session ps_1: action_required -> canceled (action_timeout)",
    ]


async def test_start_up_says_which_database_and_what_worries(
    configured: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_API_KEY", "a typo of BRIDGE_API_KEYS")
    with caplog.at_level(logging.INFO, logger="app.bridge"):
        async with configured(ALLOW_INSECURE_ACS=True):
            pass
    said = [record.getMessage() for record in caplog.records if record.name == "app.bridge"]
    assert any(line.startswith(("storage: SQLite at /", "storage: PostgreSQL ")) for line in said)
    assert not any("@" in line or "password" in line for line in said)
    assert "BRIDGE_API_KEY is not a setting of this version; it is ignored" in said
    assert any("ALLOW_INSECURE_ACS is on" in line for line in said)


async def test_every_series_an_alert_watches_exists_from_the_start(client: Any) -> None:
    text = await (await client.get("/metrics")).get_data(as_text=True)
    for line in (
        'bridge_webhooks_total{outcome="accepted",type="payment_finished"} 0.0',
        'bridge_webhooks_total{outcome="invalid_signature",type="none"} 0.0',
        'bridge_webhooks_total{outcome="body_too_large",type="none"} 0.0',
        'bridge_status_transitions_total{status="authorized"} 0.0',
        'bridge_relay_attempts_total{outcome="failed"} 0.0',
        "bridge_token_failures_total 0.0",
    ):
        assert line in text, line
    # Each refusal the webhook route counts is one of those series (no new one appears).
    for body, outcome in ((b"{}", "invalid_signature"),):
        await client.post("/webhooks/smart-glocal", data=body)
        text = await (await client.get("/metrics")).get_data(as_text=True)
        assert f'bridge_webhooks_total{{outcome="{outcome}",type="none"}} 1.0' in text


async def test_an_error_outside_a_request_is_logged_as_itself(
    app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing start-up must show its own error, not "Not within a request context"."""
    try:
        raise RuntimeError("the store would not open")
    except RuntimeError:
        import sys

        with caplog.at_level(logging.ERROR):
            app.log_exception(sys.exc_info())
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "would not open" in str(record.exc_info[1])


def test_log_lines_are_formatted_and_written_off_the_callers_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A request that logs only queues the record: the JSON encoding and the write happen in
    the writer's thread, with the request id noted when the line was logged."""
    written = io.StringIO()
    monkeypatch.setattr(sys, "stderr", written)
    formatted_in: list[str] = []
    original = JSONFormatter.format

    def noting(self: JSONFormatter, record: logging.LogRecord) -> str:
        formatted_in.append(threading.current_thread().name)
        return original(self, record)

    monkeypatch.setattr(JSONFormatter, "format", noting)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure("json")
        token = logs.with_request_id("req-queued")
        logging.getLogger("app.webhooks").info("webhook %s", "queued")
        logs.without_request_id(token)
        for _ in range(100):
            if written.getvalue():
                break
            time.sleep(0.01)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    entry = json.loads(written.getvalue())
    assert (entry["message"], entry["request_id"]) == ("webhook queued", "req-queued")
    assert formatted_in and threading.current_thread().name not in formatted_in


def test_a_scrape_survives_a_worker_file_not_yet_sized(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker creates its metrics file before it sizes it: a scrape in between (or for
    good, after a worker killed then) found an empty file and answered 500 for everyone's
    metrics."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from app.metrics import Metrics

    written = MmapedDict(str(tmp_path / "counter_1.db"))
    key = mmap_key("bridge_seen", "bridge_seen_total", [], [], "Seen")
    written.write_value(key, 3.0, 0.0)
    written.close()
    (tmp_path / "counter_2.db").touch()  # created, not sized yet
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert b"bridge_seen_total" in Metrics().exposition()
