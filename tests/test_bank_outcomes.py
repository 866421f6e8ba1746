"""Bank steps per bank on ``/metrics``: returned, fallback, abandoned, and the time to return."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from quart import Quart

from app.metrics import BANK_ORIGINS, Metrics

from .conftest import FakeClock, Partner, Provider
from .payloads import redirect
from .test_cancel import OURS

BANK = "https://acs.bank.test"  # tests/payloads.py's BANK_URL's origin
STEPS = "bridge_bank_steps_total"
RETURN_TIME = "bridge_bank_step_return_seconds"  # a histogram: _count, _sum, _bucket


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scraped(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return samples(await (await client.get("/metrics")).get_data(as_text=True))


def steps(seen: dict[Any, float], outcome: str, bank: str = BANK) -> float | None:
    return seen.get((STEPS, (("bank", bank), ("outcome", outcome))))


async def the_form_went(client: Any, token: str, mode: str = "page") -> None:
    body = {"event": "bank", "mode": mode}
    assert (await client.post(f"/pay/{token}/browser", json=body, headers=OURS)).status_code == 204


async def at_the_bank(
    provider: Provider, partner: Partner, client: Any, mode: str = "page", session_id: str = "ps_1"
) -> str:
    """A session's bank step under way: its form went, in ``mode``; the customer's token."""
    token = await partner.token(session_id)
    await provider.deliver("action_required", session_id)
    await the_form_went(client, token, mode)
    return token


async def test_every_outcome_starts_at_zero_for_other_banks_and_for_each_bank_seen(
    provider: Provider, partner: Partner, client: Any
) -> None:
    seen = await scraped(client)
    assert [steps(seen, outcome, "other") for outcome in ("returned", "fallback", "abandoned")] == [
        0.0,
        0.0,
        0.0,
    ]
    assert steps(seen, "returned") is None
    await at_the_bank(provider, partner, client)
    seen = await scraped(client)
    assert [steps(seen, outcome) for outcome in ("returned", "fallback", "abandoned")] == [
        0.0,
        0.0,
        0.0,
    ]


async def test_a_return_counts_with_the_time_since_the_form_went(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await at_the_bank(provider, partner, client)
    clock.advance(42)
    assert (await client.get(f"/pay/{token}/return")).status_code == 200
    await client.get(f"/pay/{token}/return")  # once per step
    seen = await scraped(client)
    assert steps(seen, "returned") == 1.0
    assert steps(seen, "abandoned") == 0.0
    assert seen[(f"{RETURN_TIME}_count", (("bank", BANK),))] == 1.0
    assert seen[(f"{RETURN_TIME}_sum", (("bank", BANK),))] == 42.0


async def test_a_return_after_the_providers_final_word_still_names_the_bank(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await at_the_bank(provider, partner, client)
    await provider.deliver("payment_finished", session_status="accepted")  # drops the step
    clock.advance(5)
    await client.post(f"/pay/{token}/return")
    assert steps(await scraped(client), "returned") == 1.0


async def test_a_framed_step_that_went_to_a_window_is_a_fallback(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await at_the_bank(provider, partner, client, "iframe")
    body = {"event": "fallback", "mode": "popup"}
    await client.post(f"/pay/{token}/browser", json=body, headers=OURS)
    seen = await scraped(client)
    assert (steps(seen, "fallback"), steps(seen, "returned")) == (1.0, 0.0)


async def test_a_customer_who_gives_up_after_the_form_went_abandoned_the_step(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await at_the_bank(provider, partner, client)
    await client.post(f"/pay/{token}/cancel", headers=OURS)
    await client.post(f"/pay/{token}/cancel", headers=OURS)  # no news
    assert steps(await scraped(client), "abandoned") == 1.0


async def test_a_window_that_passes_after_the_form_went_abandoned_the_step(
    app: Quart, provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    await at_the_bank(provider, partner, client)
    clock.advance(3600)
    assert await app.extensions["bridge"].sweep() == 1
    assert steps(await scraped(client), "abandoned") == 1.0


async def test_no_step_is_abandoned_without_a_form_gone_or_after_a_return(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    await client.post(f"/pay/{token}/cancel", headers=OURS)  # the form never went
    other = await at_the_bank(provider, partner, client, session_id="ps_2")
    await client.get(f"/pay/{other}/return")
    await client.post(f"/pay/{other}/cancel", headers=OURS)  # back, then gave up waiting
    seen = await scraped(client)
    assert (steps(seen, "abandoned"), steps(seen, "returned")) == (0.0, 1.0)


async def test_only_a_bank_step_is_counted(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required", interaction=redirect(url="http://acs.bank.test/"))
    await the_form_went(client, token)  # a bank URL the bridge refused: no bank to name
    await client.post(f"/pay/{token}/cancel", headers=OURS)
    seen = await scraped(client)
    assert not [key for key in seen if key[0] == STEPS and ("bank", "other") not in key[1]]
    assert steps(seen, "abandoned", "other") == 0.0


def test_a_process_names_the_first_banks_apart_then_other() -> None:
    metrics = Metrics()
    origins = [f"https://acs{number}.bank.test" for number in range(BANK_ORIGINS + 5)]
    for origin in origins:
        metrics.bank_step(origin, "returned", 3.0)
    seen = samples(metrics.exposition().decode())
    named = {
        dict(labels)["bank"] for name, labels in seen if name == STEPS and seen[(name, labels)]
    }
    assert named == {*origins[:BANK_ORIGINS], "other"}
    assert steps(seen, "returned", "other") == 5.0
    assert steps(seen, "returned", origins[0]) == 1.0
    assert metrics.bank_seen(origins[0]) == origins[0]
    assert metrics.bank_seen("https://new.bank.test") == "other"
