from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from .conftest import Configured, FakeClock, Partner, Provider, read_twice
from .payloads import inform, redirect

TRICKY = {
    "quotes": "say \"hi\" and 'bye'",
    "markup": "<script>alert(1)</script>",
    "amp": "a & b &amp; c",
    "b64": "ab+/cd==",
    "lines": "one\r\ntwo\nthree",
    "unicode": "Привет, 世界 ✓",
    "PaReq": "eJxVUt1ugjAUvl" * 600,
    "submit": "field named submit",
    "action": "field named action",
}


class Page(HTMLParser):
    """The parts of a customer page the tests look at, as a browser would read them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict[str, str]] = []
        self.way_out: list[dict[str, str]] = []  # the cancel form, apart from the bank's
        self.fields: list[tuple[str, str]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.text = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form":
            form = {k: v or "" for k, v in attributes.items()}
            (self.way_out if form.get("class") == "way-out" else self.forms).append(form)
        elif tag == "input":
            self.fields.append((attributes["name"] or "", attributes["value"] or ""))
        elif tag == "script":
            self.scripts.append(attributes)
        for name in ("src", "href"):
            if attributes.get(name):
                self.links.append(attributes[name] or "")

    def handle_data(self, data: str) -> None:
        self.text += data


def settings_of(html: str) -> dict[str, Any]:
    """The page script's settings (the JSON block it reads)."""
    found = re.search(r'<script type="application/json" id="bridge-page">(.*?)</script>', html)
    assert found is not None
    settings: dict[str, Any] = json.loads(found[1])
    return settings


def csp(response: Any) -> dict[str, str]:
    header = response.headers["Content-Security-Policy"]
    return {part.split(" ", 1)[0]: part.split(" ", 1)[1] for part in header.split("; ")}


async def open_page(client: Any, token: str, path: str = "") -> tuple[Any, Page]:
    if path.startswith("/return"):  # recorded: not read twice
        response = await client.get(f"/pay/{token}{path}")
    else:
        response = await read_twice(client, f"/pay/{token}{path}")
    return response, Page(await response.get_data(as_text=True))


def assert_customer_headers(response: Any, *, ancestors: str = "'none'") -> None:
    policy = csp(response)
    assert policy["default-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == ancestors
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]{43}='", policy["script-src"])
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "*" not in policy["form-action"].split()
    assert "http:" not in policy["form-action"].split()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def assert_nothing_from_elsewhere(page: Page) -> None:
    for link in page.links:
        assert link.startswith("/") and not link.startswith("//") or link.startswith("data:"), link


async def test_nothing_heard_yet_shows_a_waiting_page_that_moves_on(
    partner: Partner, client: Any
) -> None:
    response, page = await open_page(client, await partner.token())
    assert response.status_code == 200
    assert "Preparing your payment" in page.text
    assert page.forms == []
    assert_customer_headers(response)
    inline = [script for script in page.scripts if script.get("type") != "application/json"]
    assert inline == [{}]
    assert '<meta http-equiv="refresh" content="5">' in await response.get_data(as_text=True)
    assert_nothing_from_elsewhere(page)


async def test_the_policy_allows_the_inline_script_by_its_hash_alone(
    partner: Partner, client: Any
) -> None:
    """The page's one inline script is allowed by its SHA-256, so every answer of a page is
    the same bytes; the settings block is JSON, which a browser never runs."""
    token = await partner.token()
    first, _ = await open_page(client, token)
    second, _ = await open_page(client, token)
    html = await first.get_data(as_text=True)
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    assert len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert csp(first)["script-src"] == f"'sha256-{digest}'"
    assert first.headers["Content-Security-Policy"] == second.headers["Content-Security-Policy"]
    assert html == await second.get_data(as_text=True)


async def test_post_instruction_renders_the_exact_form(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required", interaction=redirect(params=TRICKY))
    response, page = await open_page(client, token)
    assert response.status_code == 200
    assert page.forms == [
        {"id": "bank-form", "method": "post", "action": "https://acs.bank.test/challenge?foo=bar"}
    ]
    assert page.fields == list(TRICKY.items())
    html = await response.get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "HTMLFormElement.prototype.submit.call(form)" in html
    assert re.search(
        r"<noscript><button type=\"submit\"[^>]*>Continue to your bank</button></noscript>", html
    )
    assert_customer_headers(response)
    assert csp(response)["form-action"] == "'self' https://acs.bank.test https:"
    assert_nothing_from_elsewhere(page)


async def test_qs_missing_from_url_is_added_and_base_url_alone_works(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver(
        "action_required",
        interaction=redirect(
            url=None, base_url="https://acs.bank.test/3ds", qs={"a": "1 2", "b": "&"}
        ),
    )
    _, page = await open_page(client, token)
    assert page.forms[0]["action"] == "https://acs.bank.test/3ds?a=1+2&b=%26"


async def test_get_instruction_carries_qs_and_params_as_fields(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver(
        "action_required",
        interaction=redirect(method="GET", params={"creq": "eyJ0+/=", "threeDSSessionData": "x y"}),
    )
    response, page = await open_page(client, token)
    assert page.forms == [] and page.fields == []
    url = "https://acs.bank.test/challenge?foo=bar&creq=eyJ0%2B%2F%3D&threeDSSessionData=x+y"
    assert page.links.count(url) == 3  # the script's link, the no-script link, "open again"
    assert csp(response)["form-action"] == "'self' https://acs.bank.test https:"


@pytest.mark.parametrize(
    "url",
    [
        "http://acs.bank.test/",
        "javascript:alert(1)",
        "not a url",
        "/relative",
        "https://user@acs.bank.test/",
    ],
)
async def test_an_unsafe_bank_url_is_refused_and_logged_without_the_url(
    provider: Provider, partner: Partner, client: Any, caplog: pytest.LogCaptureFixture, url: str
) -> None:
    token = await partner.token()
    await provider.deliver("action_required", interaction=redirect(url=url, base_url=None))
    with caplog.at_level(logging.INFO):
        response, page = await open_page(client, token)
    assert response.status_code == 502
    assert page.forms == [] and page.fields == []
    assert "could not open your bank" in page.text
    assert url not in await response.get_data(as_text=True)
    assert any("refused the bank instruction" in record.getMessage() for record in caplog.records)
    assert url not in caplog.text
    assert_customer_headers(response)


async def test_insecure_banks_are_allowed_only_when_configured(configured: Configured) -> None:
    async with configured(ALLOW_INSECURE_ACS="true") as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver(
            "action_required", interaction=redirect(url="http://127.0.0.1:9/acs", base_url=None)
        )
        response, page = await open_page(bridge.client, token)
    assert page.forms[0]["action"] == "http://127.0.0.1:9/acs?foo=bar"
    assert csp(response)["form-action"] == "'self' http://127.0.0.1:9 https:"


async def test_inform_shows_a_qr_code_drawn_here_and_a_link(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required", interaction=inform())
    response, page = await open_page(client, token)
    assert response.status_code == 200
    assert "Scan to pay" in page.text
    assert any(link.startswith("data:image/svg+xml") for link in page.links)
    assert "https://qr.nspk.test/AS1000670LSS7DN18SJQDNP4B05KLJL2" in page.links
    assert_customer_headers(response)


async def test_final_status_shows_the_outcome(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver(
        "payment_finished", payment_status="failed", error_code="insufficient_funds"
    )
    response, page = await open_page(client, token)
    assert response.status_code == 200
    assert "Payment not approved" in page.text
    assert_customer_headers(response)


async def test_final_status_redirects_to_the_return_url_when_configured(
    configured: Configured,
) -> None:
    async with configured(RETURN_URL="https://shop.test/done?order=7") as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("payment_finished", session_status="accepted")
        response = await bridge.client.get(f"/pay/{token}")
    assert response.status_code == 303
    assert response.headers["Location"] == (
        "https://shop.test/done?order=7&session_id=ps_1&status=succeeded&ts=1800000000"
    )
    assert_customer_headers(response)


@pytest.mark.parametrize(
    ("lang", "heading"), [("en", "Payment approved"), ("ru", "Платёж одобрен")]
)
async def test_a_held_payment_is_an_approved_outcome(
    provider: Provider, partner: Partner, client: Any, lang: str, heading: str
) -> None:
    """Two-stage: once the money is held the customer's part is over, whatever the partner
    does next (not a spinner until the capture, days later perhaps)."""
    token = await partner.token()
    await provider.deliver("ready_to_capture", updated_at="2027-01-15T07:00:00Z")
    response, page = await open_page(client, token, f"?lang={lang}")
    assert response.status_code == 200
    assert heading in page.text
    settings = settings_of(await response.get_data(as_text=True))
    assert (settings["status"], settings["done"]) == ("authorized", True)
    status = await (await client.get(f"/api/v1/status/{token}")).get_json()
    assert (status["status"], status["done"]) == ("authorized", True)
    assert_customer_headers(response)


async def test_a_held_payment_goes_on_to_the_return_url(configured: Configured) -> None:
    async with configured(RETURN_URL="https://shop.test/done?order=7") as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("ready_to_capture")
        response = await bridge.client.get(f"/pay/{token}")
        back = await bridge.client.get(f"/pay/{token}/return")
    assert response.status_code == 303
    assert response.headers["Location"] == (
        "https://shop.test/done?order=7&session_id=ps_1&status=authorized&ts=1800000000"
    )
    page = Page(await back.get_data(as_text=True))
    assert "Payment approved" in page.text
    assert (
        "https://shop.test/done?order=7&session_id=ps_1&status=authorized&ts=1800000000"
        in page.links
    )


@pytest.mark.parametrize(
    "interaction",
    [
        {"type": "inform", "inform": {"notification": {"type": "sber_pay_widget", "id": "7"}}},
        {"type": "app_confirmation", "app_confirmation": {"bank": "x"}},
        {"type": "redirect", "redirect": {"method": "POST", "tds_data": {"acs": "opaque"}}},
    ],
)
@pytest.mark.parametrize(
    ("lang", "heading"),
    [("en", "Finish the payment with your bank"), ("ru", "Подтвердите платёж в банке")],
)
async def test_a_step_the_bridge_cannot_show_is_finished_elsewhere(
    provider: Provider,
    partner: Partner,
    client: Any,
    interaction: dict[str, Any],
    lang: str,
    heading: str,
) -> None:
    token = await partner.token()
    answer = await provider.deliver("action_required", interaction=interaction)
    assert await answer.get_json() == {"status": "accepted"}
    response, page = await open_page(client, token, f"?lang={lang}")
    assert response.status_code == 200
    assert heading in page.text
    assert page.forms == [] and "opaque" not in await response.get_data(as_text=True)
    # Without JavaScript the page still moves on by itself.
    assert '<meta http-equiv="refresh" content="5">' in await response.get_data(as_text=True)
    settings = settings_of(await response.get_data(as_text=True))
    assert (settings["status"], settings["done"]) == ("action_required", False)
    session = await (await partner.session()).get_json()
    assert session["status"] == "action_required"
    assert session["action"]["type"] == interaction["type"]
    assert session["action"]["url"].startswith("https://bridge.test/pay/")
    assert_customer_headers(response)


async def test_a_passed_window_shows_the_expired_page(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    clock.advance(3600)
    response, page = await open_page(client, token)
    assert response.status_code == 410
    assert "expired" in page.text
    assert page.forms == []
    assert_customer_headers(response)


@pytest.mark.parametrize("path", ["/pay/garbage", "/pay/garbage/return", "/pay/a/b/c"])
async def test_bad_tokens_get_a_plain_404_page(client: Any, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert "This link is not valid" in await response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/html")
    assert_customer_headers(response)


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_return_from_the_bank_waits_then_shows_the_outcome(
    provider: Provider, partner: Partner, client: Any, method: str
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    response = await client.open(
        f"/pay/{token}/return", method=method, form={"PaRes": "bank-answer", "MD": "abc75daefnn"}
    )
    page = Page(await response.get_data(as_text=True))
    assert response.status_code == 200
    assert "Checking the result" in page.text
    assert page.forms == []  # back from the bank: never the old form again
    assert_customer_headers(response)
    _, again = await open_page(client, token)
    assert "Checking the result" in again.text
    await provider.deliver("payment_finished", session_status="accepted")
    _, done = await open_page(client, token, "/return")
    assert "Payment complete" in done.text


async def test_a_new_action_after_the_return_shows_its_form(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    await client.get(f"/pay/{token}/return")
    clock.advance(5)
    await provider.deliver("action_required", interaction=redirect(params={"creq": "second"}))
    _, page = await open_page(client, token)
    assert page.fields == [("creq", "second")]


async def test_frame_ancestors_come_from_configuration(configured: Configured) -> None:
    async with configured(FRAME_ANCESTORS="https://shop.test https://*.shop.test") as bridge:
        token = await bridge.partner.token()
        response, _ = await open_page(bridge.client, token)
    assert_customer_headers(response, ancestors="https://shop.test https://*.shop.test")
    assert "X-Frame-Options" not in response.headers


async def test_page_settings_never_carry_the_bank_instruction(
    provider: Provider, partner: Partner, client: Any
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    html = await (await client.get(f"/pay/{token}")).get_data(as_text=True)
    settings = re.search(r'<script type="application/json" id="bridge-page">(.*?)</script>', html)
    assert settings is not None
    for secret in ("sdfew", "abc75daefnn", "acs.bank.test"):
        assert secret not in settings.group(1)


async def test_no_log_line_carries_pareq_md_or_the_bank_url(
    provider: Provider, partner: Partner, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        token = await partner.token()
        await provider.deliver("action_required")
        await client.get(f"/pay/{token}")
        await client.post(f"/pay/{token}/return", form={"PaRes": "bank-answer"})
        await provider.deliver("payment_finished", session_status="accepted")
        await client.get(f"/api/v1/status/{token}")
    assert caplog.records
    for secret in ("sdfew^//asdhbv", "abc75daefnn", "acs.bank.test", "bank-answer", "4446008801"):
        assert secret not in caplog.text


async def test_the_return_url_keeps_its_fragment_after_the_outcome(configured: Configured) -> None:
    async with configured(RETURN_URL="https://shop.test/done?order=7#thanks") as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("payment_finished", session_status="accepted")
        response = await bridge.client.get(f"/pay/{token}")
    assert response.headers["Location"] == (
        "https://shop.test/done?order=7&session_id=ps_1&status=succeeded&ts=1800000000#thanks"
    )


async def test_the_return_page_shows_the_outcome_even_with_a_return_url(
    configured: Configured,
) -> None:
    async with configured(RETURN_URL="https://shop.test/done") as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("payment_finished", session_status="accepted")
        response = await bridge.client.post(f"/pay/{token}/return", form={"PaRes": "x"})
        html = await response.get_data(as_text=True)
    assert response.status_code == 200
    page = Page(html)
    assert "Payment complete" in page.text
    onward = "https://shop.test/done?session_id=ps_1&status=succeeded&ts=1800000000"
    assert onward in page.links  # "Continue to the shop", for a customer without JavaScript
    assert settings_of(html)["onward_url"] == onward
    assert '"onward_url": "https://shop.test/done?session_id=ps_1\\u0026status=succeeded' in html


async def test_customer_headers_on_method_errors_too(client: Any, partner: Partner) -> None:
    token = await partner.token()
    response = await client.put(f"/pay/{token}")
    assert response.status_code == 405
    assert_customer_headers(response)


async def test_an_unexpected_error_is_logged_without_the_token(
    app: Any, partner: Partner, client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    token = await partner.token()
    bridge = app.extensions["bridge"]

    async def broken(session_id: str) -> None:
        raise RuntimeError("storage fell over")

    bridge.session = broken
    app.config["PROPAGATE_EXCEPTIONS"] = False
    with caplog.at_level(logging.ERROR):
        response = await client.get(f"/pay/{token}")
    assert response.status_code == 500
    assert_customer_headers(response)
    assert "Exception on GET /pay/<token>" in caplog.text
    assert token not in caplog.text


async def test_a_second_bank_step_reaches_a_customer_back_on_the_return_page(
    provider: Provider, partner: Partner, client: Any, clock: FakeClock
) -> None:
    token = await partner.token()
    await provider.deliver("action_required")
    returned = await client.post(f"/pay/{token}/return", form={"PaRes": "x"})
    next_url = json.loads(
        re.search(r'id="bridge-page">(.*?)</script>', await returned.get_data(as_text=True))[1]
    )["next_url"]
    clock.advance(5)
    await provider.deliver("action_required", interaction=redirect(params={"creq": "again"}))
    clock.advance(1)
    page = Page(await (await client.get(next_url)).get_data(as_text=True))
    assert page.fields == [("creq", "again")]  # the page's own reload shows the new step
    _, direct = await open_page(client, token)
    assert direct.fields == [("creq", "again")]


async def test_a_framed_page_shows_the_outcome_instead_of_leaving_for_the_shop(
    configured: Configured,
) -> None:
    async with configured(RETURN_URL="https://shop.test/done") as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("payment_finished", session_status="accepted")
        framed = await bridge.client.get(f"/pay/{token}", headers={"Sec-Fetch-Dest": "iframe"})
        top = await bridge.client.get(f"/pay/{token}", headers={"Sec-Fetch-Dest": "document"})
    assert (
        framed.status_code == 200
        and "Payment complete" in Page(await framed.get_data(as_text=True)).text
    )
    assert top.status_code == 303


async def test_the_expired_page_stays_even_with_a_return_url(
    configured: Configured, clock: FakeClock
) -> None:
    async with configured(RETURN_URL="https://shop.test/done") as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("action_required")
        clock.advance(3600)
        response = await bridge.client.get(f"/pay/{token}/return")
        html = await response.get_data(as_text=True)
    assert response.status_code == 410
    assert '"onward_url": null' in html  # the page stays: nothing sends the customer away
    # ... but the way back to the shop is there, with the outcome (canceled is final).
    (link,) = [href for href in Page(html).links if href.startswith("https://shop.test/")]
    assert "session_id=ps_1&status=canceled&ts=" in link


@pytest.mark.parametrize(
    ("embedder", "greeted"),
    [
        ("https://eu.shop.test", True),
        ("https://shop.test", True),
        ("https://evil.test", False),
        ("https://eu.shop.test.evil.test", False),
        ("https://xshop.test", False),
    ],
)
async def test_the_embedding_origin_is_greeted_only_when_configured(
    configured: Configured, embedder: str, greeted: bool
) -> None:
    async with configured(FRAME_ANCESTORS="https://shop.test https://*.shop.test") as bridge:
        token = await bridge.partner.token()
        html = await (await bridge.client.get(f"/pay/{token}?embedder={embedder}")).get_data(
            as_text=True
        )
    settings = json.loads(re.search(r'id="bridge-page">(.*?)</script>', html)[1])
    exact = [origin for origin in settings["origins"] if "*" not in origin]
    assert (embedder in exact) is greeted
