"""The return to the partner: ``session_id``, ``status``, ``ts`` and ``sig`` on the way back to
the shop, and a token's own ``return_url`` (contract: "The return to the partner")."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.returns import (
    RETURN_URL_LONGEST,
    ReturnURLRefusedError,
    allowed_return_url,
    documented_pattern,
    escaped,
    onward_url,
)

from .conftest import Configured, Deployment, FakeClock
from .test_pages import Page, settings_of

SECRET = "return-secret-0123456789"
SHOP = "https://shop.test/done?order=7#thanks"
NOW = 1_800_000_000  # the FakeClock's start
README = Path(__file__).parent.parent / "README.md"
# Minted by the code before return URLs existed (git show 954f812:app/tokens.py) with the tests'
# BRIDGE_SECRET_KEY at NOW: a token of the session id alone.
OLD_TOKEN = "InBzXzEi.a0nSAA.osAlmuJ5og3VOYHkIB02JEL7kfM"


def readme_check() -> Callable[..., dict[str, str] | None]:
    """``check_return`` exactly as README.md shows it to partners."""
    text = README.read_text()
    section = text.split("## Checking the return\n", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # our own README, the code partners copy
    check: Callable[..., dict[str, str] | None] = namespace["check_return"]
    return check


def query_of(url: str) -> str:
    return urlsplit(url).query


def signed(url: str, secret: str = SECRET) -> bool:
    body, _, sig = query_of(url).rpartition("&sig=")
    expected = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig)


async def mint(bridge: Deployment, body: Any = None, session_id: str = "ps_1") -> Any:
    headers = dict(bridge.partner.headers)
    if body is not None:
        headers["Content-Type"] = "application/json"
    kwargs: dict[str, Any] = {"headers": headers}
    if isinstance(body, bytes):
        kwargs["data"] = body
    elif body is not None:
        kwargs["json"] = body
    return await bridge.client.post(f"/api/v1/sessions/{session_id}/tokens", **kwargs)


async def token_for(bridge: Deployment, return_url: str | None = None) -> str:
    response = await mint(bridge, None if return_url is None else {"return_url": return_url})
    assert response.status_code == 201, await response.get_json()
    token: str = (await response.get_json())["token"]
    return token


async def finish(bridge: Deployment, kind: str = "succeeded", session_id: str = "ps_1") -> None:
    fields: dict[str, Any] = {
        "succeeded": {"session_status": "accepted"},
        "failed": {"payment_status": "failed", "error_code": "insufficient_funds"},
    }.get(kind, {})
    webhook = "ready_to_capture" if kind == "authorized" else "payment_finished"
    await bridge.provider.deliver(webhook, session_id, **fields)


async def onward(bridge: Deployment, token: str) -> str:
    """Where the top-level page sends the customer (303)."""
    response = await bridge.client.get(f"/pay/{token}")
    assert response.status_code == 303, response.status_code
    location: str = response.headers["Location"]
    return location


# --- the URL ------------------------------------------------------------------------------------


def test_the_outcome_is_appended_in_order_and_signed_last() -> None:
    url = onward_url(
        "https://shop.test/done", session_id="ps_1", status="succeeded", ts=NOW, secret=SECRET
    )
    names = [name for name, _ in parse_qsl(query_of(url))]
    assert names == ["session_id", "status", "ts", "sig"]
    assert url.startswith(f"https://shop.test/done?session_id=ps_1&status=succeeded&ts={NOW}&sig=")
    assert re.fullmatch(r"[0-9a-f]{64}", dict(parse_qsl(query_of(url)))["sig"])
    assert signed(url)


def test_what_the_url_carries_stays_and_the_fragment_stays_last() -> None:
    url = onward_url(SHOP, session_id="ps_1", status="failed", ts=NOW, secret=SECRET)
    assert url.startswith(f"https://shop.test/done?order=7&session_id=ps_1&status=failed&ts={NOW}")
    assert url.endswith("#thanks") and url.count("#") == 1
    assert "thanks" not in query_of(url)
    assert signed(url)
    assert query_of(url).startswith("order=7&")  # the partner's own parameters are signed too


def test_no_sig_without_a_secret() -> None:
    url = onward_url(SHOP, session_id="ps_1", status="succeeded", ts=NOW, secret=None)
    assert url == f"https://shop.test/done?order=7&session_id=ps_1&status=succeeded&ts={NOW}#thanks"


def test_the_sig_fails_when_any_byte_of_the_query_changes() -> None:
    url = onward_url(SHOP, session_id="ps_1", status="succeeded", ts=NOW, secret=SECRET)
    check = readme_check()
    query = query_of(url)
    assert check(query, SECRET, now=NOW) is not None
    for index, character in enumerate(query):
        for other in {"0", "a", "%", "&"} - {character}:
            changed = query[:index] + other + query[index + 1 :]
            assert check(changed, SECRET, now=NOW) is None, changed
            assert not signed(f"https://shop.test/?{changed}"), changed
    assert check(query + "0", SECRET, now=NOW) is None
    assert check(query.replace("&sig=", "&sig=&sig="), SECRET, now=NOW) is None
    assert check(query, SECRET + "x", now=NOW) is None


def test_the_readme_check_wants_a_recent_ts() -> None:
    check = readme_check()
    query = query_of(onward_url(SHOP, session_id="ps_1", status="succeeded", ts=NOW, secret=SECRET))
    assert check(query, SECRET, now=NOW + 300) == {
        "order": "7",
        "session_id": "ps_1",
        "status": "succeeded",
        "ts": str(NOW),
    }
    assert check(query, SECRET, now=NOW + 301) is None
    assert check(query, SECRET, now=NOW - 61) is None  # from the future: a clock far off
    assert check(query, SECRET, max_age=3600, now=NOW + 3600) is not None


def test_session_ids_and_urls_that_need_escaping_go_out_escaped_and_signed() -> None:
    url = onward_url(
        'https://shop.test/a b/ü?q="<x>"&p=100%&r=%41#frag ment',
        session_id="ps_1&status=succeeded",
        status="failed",
        ts=NOW,
        secret=SECRET,
    )
    assert url.isascii() and not re.search(r"[\s\"<>\\^`{|}]", url)
    assert url.startswith("https://shop.test/a%20b/%C3%BC?q=%22%3Cx%3E%22&p=100%25&r=%41&")
    assert url.endswith("#frag%20ment")
    assert dict(parse_qsl(query_of(url)))["session_id"] == "ps_1&status=succeeded"
    assert dict(parse_qsl(query_of(url)))["status"] == "failed"
    assert signed(url)


# --- which return URLs a token may carry --------------------------------------------------------

ALLOWED: dict[str, Any] = {
    "return_url": "https://shop.test/done",
    "origins": ("https://other.test:8443",),
}


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.test/elsewhere?basket=1#top",
        "https://shop.test",
        "https://SHOP.test:443/x",
        "https://other.test:8443/back",
        "https://other.test:08443/back",
    ],
)
def test_return_urls_of_the_allowed_origins_are_accepted(url: str) -> None:
    assert allowed_return_url(url, **ALLOWED) == url  # nothing to escape: carried as given


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.test/done",
        "http://shop.test/done",  # another scheme is another origin
        "https://shop.test:8443/done",
        "https://other.test/back",
        "https://shop.test.evil.test/",
        "https://evil.test\\@shop.test/",  # a browser goes to evil.test
        "https://user@shop.test/",
        "https://shop.test@evil.test/",
        "//shop.test/done",
        "/done",
        "javascript:alert(1)//https://shop.test/",
        "data:text/html,https://shop.test/",
        "https://shop.test\r\nSet-Cookie: x=1",
        "https://shop.test/\x00",
        " https://shop.test/",
        "https://shop.test/" + "a" * RETURN_URL_LONGEST,
        "https://shop.test/" + " " * 700 + "x",  # 2,119 characters once escaped
        "",
    ],
)
def test_return_urls_of_other_origins_or_shapes_are_refused(url: str) -> None:
    with pytest.raises(ReturnURLRefusedError):
        allowed_return_url(url, **ALLOWED)


def test_with_nothing_configured_no_return_url_is_allowed() -> None:
    with pytest.raises(ReturnURLRefusedError):
        allowed_return_url("https://shop.test/", return_url=None, origins=())


@settings(max_examples=200, deadline=None)
@given(st.from_regex(documented_pattern(["https://shop.test", "https://other.test:8443"])))
def test_every_url_the_document_allows_is_accepted(url: str) -> None:
    url = url.rstrip("\n")  # Python's $ allows one before the end; JSON Schema's does not
    if len(escaped(url)) <= RETURN_URL_LONGEST:
        assert allowed_return_url(url, **ALLOWED) == escaped(url)


# --- through HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["authorized", "succeeded", "failed"])
async def test_the_customer_goes_on_with_the_outcome_signed(
    configured: Configured, status: str
) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_SECRET=SECRET) as bridge:
        token = await token_for(bridge)
        await finish(bridge, status)
        location = await onward(bridge, token)
    assert location.startswith(
        f"https://shop.test/done?order=7&session_id=ps_1&status={status}&ts={NOW}&sig="
    )
    assert location.endswith("#thanks")
    assert readme_check()(query_of(location), SECRET, now=NOW) == {
        "order": "7",
        "session_id": "ps_1",
        "status": status,
        "ts": str(NOW),
    }


async def test_ts_is_the_bridges_clock_when_the_page_is_shown(
    configured: Configured, clock: FakeClock
) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_SECRET=SECRET) as bridge:
        token = await token_for(bridge)
        await finish(bridge)
        clock.advance(125.7)
        location = await onward(bridge, token)
    assert dict(parse_qsl(query_of(location)))["ts"] == str(NOW + 125)


async def test_no_return_before_the_outcome(configured: Configured) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_SECRET=SECRET) as bridge:
        token = await token_for(bridge)
        waiting = await bridge.client.get(f"/pay/{token}")
        await bridge.provider.deliver("action_required")
        bank = await bridge.client.get(f"/pay/{token}")
    for page in (waiting, bank):
        assert page.status_code == 200
        assert settings_of(await page.get_data(as_text=True))["onward_url"] is None


async def test_the_redirect_and_the_outcome_page_carry_the_same_signed_url(
    configured: Configured,
) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_SECRET=SECRET) as bridge:
        token = await token_for(bridge)
        await finish(bridge)
        location = await onward(bridge, token)
        back = await bridge.client.post(f"/pay/{token}/return", form={"PaRes": "x"})
        framed = await bridge.client.get(f"/pay/{token}", headers={"Sec-Fetch-Dest": "iframe"})
    assert signed(location)
    for page in (back, framed):
        assert page.status_code == 200
        html = await page.get_data(as_text=True)
        assert location in Page(html).links  # "Continue to the shop"
        assert settings_of(html)["onward_url"] == location  # the page's script goes there


async def test_without_a_secret_there_is_no_sig(configured: Configured) -> None:
    async with configured(RETURN_URL=SHOP) as bridge:
        token = await token_for(bridge)
        await finish(bridge)
        location = await onward(bridge, token)
    assert (
        location
        == f"https://shop.test/done?order=7&session_id=ps_1&status=succeeded&ts={NOW}#thanks"
    )


async def test_a_token_minted_before_return_urls_existed_still_works(
    configured: Configured,
) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_SECRET=SECRET) as bridge:
        await finish(bridge)
        location = await onward(bridge, OLD_TOKEN)
        status = await bridge.client.get(f"/api/v1/status/{OLD_TOKEN}")
    assert location.startswith("https://shop.test/done?order=7&session_id=ps_1&status=succeeded&")
    assert signed(location)
    assert status.status_code == 200 and (await status.get_json())["status"] == "succeeded"


# --- a token's own return_url ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "return_url",
    ["https://other.test:8443/thanks?cart=9", "https://shop.test/another/page"],
)
async def test_a_token_may_carry_its_own_return_url(
    configured: Configured, return_url: str
) -> None:
    async with configured(
        RETURN_URL=SHOP, RETURN_SECRET=SECRET, RETURN_ORIGINS="https://other.test:8443"
    ) as bridge:
        token = await token_for(bridge, return_url)
        default = await token_for(bridge)
        await finish(bridge)
        own = await onward(bridge, token)
        usual = await onward(bridge, default)
    parameters = f"session_id=ps_1&status=succeeded&ts={NOW}&sig="
    separator = "&" if "?" in return_url else "?"
    assert own.startswith(f"{return_url}{separator}{parameters}") and signed(own)
    assert usual.startswith(f"https://shop.test/done?order=7&{parameters}") and signed(usual)


async def test_a_return_url_works_without_return_url_configured(configured: Configured) -> None:
    async with configured(RETURN_ORIGINS="https://other.test") as bridge:
        token = await token_for(bridge, "https://other.test/back")
        default = await token_for(bridge)
        await finish(bridge)
        location = await onward(bridge, token)
        page = await bridge.client.get(f"/pay/{default}")
    assert location == f"https://other.test/back?session_id=ps_1&status=succeeded&ts={NOW}"
    assert page.status_code == 200  # the bridge's own outcome page, as before


@pytest.mark.parametrize(
    "return_url",
    [
        "https://evil.test/",
        "http://shop.test/done",
        "https://evil.test\\@shop.test/",
        "javascript:alert(1)",
        "/relative",
        "https://shop.test/" + "a" * RETURN_URL_LONGEST,
        "https://shop.test/\r\nX: y",
    ],
)
async def test_a_return_url_of_another_origin_is_422(
    configured: Configured, return_url: str
) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_ORIGINS="https://other.test:8443") as bridge:
        response = await mint(bridge, {"return_url": return_url})
        sessions = await bridge.partner.session("ps_1")
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == "return_url_not_allowed" and error["message"]
    assert sessions.status_code == 404  # nothing was minted, nothing stored


async def test_with_nothing_configured_any_return_url_is_422(configured: Configured) -> None:
    async with configured() as bridge:
        response = await mint(bridge, {"return_url": "https://shop.test/"})
    assert response.status_code == 422
    assert (await response.get_json())["error"]["code"] == "return_url_not_allowed"


@pytest.mark.parametrize("body", [None, b"", b"  \n", {}, {"return_url": None}])
async def test_no_body_or_an_empty_one_works_as_before(configured: Configured, body: Any) -> None:
    async with configured(RETURN_URL=SHOP) as bridge:
        response = await mint(bridge, body)
        token = (await response.get_json())["token"]
        await finish(bridge)
        location = await onward(bridge, token)
    assert response.status_code == 201
    assert location.startswith("https://shop.test/done?order=7&session_id=ps_1")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"not json", 400, "invalid_json"),
        (b'{"return_url": ', 400, "invalid_json"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, 413, "body_too_large"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "invalid_json"),
        (b'"https://shop.test/"', 422, "invalid_request"),
        (b"[]", 422, "invalid_request"),
        (b"null", 422, "invalid_request"),
        (b'{"return_url": 7}', 422, "invalid_request"),
        (b'{"return_url": ["https://shop.test/"]}', 422, "invalid_request"),
        (b'{"returnUrl": "https://shop.test/"}', 422, "invalid_request"),
    ],
)
async def test_a_body_of_another_shape_is_a_clear_error(
    configured: Configured, body: bytes, status: int, code: str
) -> None:
    async with configured(RETURN_URL=SHOP) as bridge:
        response = await mint(bridge, body)
    assert response.status_code == status
    answer = await response.get_json()
    assert answer["error"]["code"] == code and answer["error"]["message"]


async def test_a_return_url_that_needs_escaping(configured: Configured) -> None:
    wanted = 'https://other.test/back/ä ö?note="<b>hi</b>"&sum=100%&x=a|b#top part'
    async with configured(
        RETURN_URL=SHOP, RETURN_SECRET=SECRET, RETURN_ORIGINS="https://other.test"
    ) as bridge:
        token = await token_for(bridge, wanted)
        await finish(bridge)
        location = await onward(bridge, token)
        back = await bridge.client.get(f"/pay/{token}/return")
    assert location.isascii() and not re.search(r"[\s\"<>|]", location)
    assert location.startswith(
        "https://other.test/back/%C3%A4%20%C3%B6?note=%22%3Cb%3Ehi%3C/b%3E%22&sum=100%25&x=a%7Cb"
        "&session_id=ps_1&status=succeeded&ts="
    )
    assert location.endswith("#top%20part")
    html = await back.get_data(as_text=True)
    assert location in Page(html).links and settings_of(html)["onward_url"] == location
    assert "<b>hi" not in html
    checked = readme_check()(query_of(location), SECRET, now=NOW)
    assert checked is not None and checked["note"] == '"<b>hi</b>"'


async def test_the_longest_return_url_fits_in_a_working_token(configured: Configured) -> None:
    longest = "https://other.test/" + "%E2%9C%93" * ((RETURN_URL_LONGEST - 19) // 9)
    longest += "x" * (RETURN_URL_LONGEST - len(longest))
    async with configured(RETURN_ORIGINS="https://other.test", RETURN_SECRET=SECRET) as bridge:
        token = await token_for(bridge, longest)
        await finish(bridge)
        location = await onward(bridge, token)
    assert len(longest) == RETURN_URL_LONGEST
    assert location.startswith(f"{longest}?session_id=ps_1&") and signed(location)


async def test_an_origin_taken_off_the_list_sends_the_customer_to_return_url(
    configured: Configured,
) -> None:
    async with configured(RETURN_URL=SHOP, RETURN_ORIGINS="https://other.test") as bridge:
        token = await token_for(bridge, "https://other.test/back")
    async with configured(RETURN_URL=SHOP) as bridge:
        await finish(bridge)
        location = await onward(bridge, token)
    assert location.startswith("https://shop.test/done?order=7&session_id=ps_1&")


async def test_the_document_shows_the_body_and_the_allowed_origins(configured: Configured) -> None:
    path = "/api/v1/sessions/{session_id}/tokens"
    async with configured(RETURN_URL=SHOP, RETURN_ORIGINS="https://other.test:8443") as bridge:
        document = await (await bridge.client.get("/openapi.json")).get_json()
    async with configured() as bridge:
        nothing = await (await bridge.client.get("/openapi.json")).get_json()

    def body(document: dict[str, Any]) -> dict[str, Any]:
        schema: dict[str, Any] = document["paths"][path]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
        return schema

    schema = body(document)
    assert schema["additionalProperties"] is False
    text = schema["properties"]["return_url"]["anyOf"][0]
    assert text["pattern"] == documented_pattern(["https://other.test:8443", "https://shop.test"])
    assert schema["properties"]["return_url"]["maxLength"] == RETURN_URL_LONGEST
    assert "return_url" not in body(nothing)["properties"]
    assert {"400", "422"} <= set(document["paths"][path]["post"]["responses"])


QUOTE_SECRET = "return-secret-for-quotes-0123456789"


async def test_a_quote_in_the_return_url_is_sent_as_a_browser_sends_it(
    configured: Configured,
) -> None:
    """Chromium sends ``'`` in a query as ``%27``: the signed URL must already say so."""
    async with configured(
        RETURN_URL="https://shop.test/done?name=o'brien", RETURN_SECRET=QUOTE_SECRET
    ) as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("payment_finished", session_status="accepted")
        answer = await bridge.client.get(f"/pay/{token}")
    location = answer.headers["Location"]
    assert location.startswith("https://shop.test/done?name=o%27brien&session_id=ps_1")
    query = location.split("?", 1)[1]
    signed, _, sig = query.partition("&sig=")
    expected = hmac.new(QUOTE_SECRET.encode(), signed.encode(), "sha256").hexdigest()
    assert sig == expected
