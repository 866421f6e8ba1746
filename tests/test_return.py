"""The return to the partner: ``session_id``, ``status``, ``ts`` and ``sig`` on the way back to
the shop, and a token's own ``return_url`` (README: "Checking the return")."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema_rs
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


# The bridge's own names already in a URL's query: a partner whose framework reads the first
# value (or ignores case, or reads PHP's mangled names) would take the URL's for the bridge's.
NAMING_THE_BRIDGES_OWN = [
    "https://shop.test/done?status=succeeded",
    "https://shop.test/done?order=7&session_id=victim",
    "https://shop.test/done?ts=9999999999",
    "https://shop.test/done?sig=0",
    "https://shop.test/done?status",  # no value: parse_qsl with keep_blank_values keeps it
    "https://shop.test/done?status=",
    "https://shop.test/done?%73tatus=succeeded",  # percent-encoded, as a framework decodes
    "https://shop.test/done?st%61tus=succeeded",
    "https://shop.test/done?STATUS=succeeded",  # ASP.NET reads names case-insensitively
    "https://shop.test/done?Session_Id=victim",
    "https://shop.test/done?\u017ftatus=succeeded",  # long s: "S" in upper case
    "https://shop.test/done?s%C4%B1g=0",  # dotless i: "I" in upper case
    "https://shop.test/done?x=1;status=succeeded",  # ; separates too (Rack, older Pythons)
    "https://shop.test/done?status[]=succeeded",  # PHP: $_GET['status'], an array
    "https://shop.test/done?status%5B0%5D=succeeded",
    "https://shop.test/done?session.id=victim",  # PHP reads it as session_id
    "https://shop.test/done?session+id=victim",
    "https://shop.test/done?session%20id=victim",
    "https://shop.test/done?session[id=victim",
    "https://shop.test/done?+status=succeeded",  # PHP drops leading spaces of a name
    "https://shop.test/done?%20ts=1",
    "https://shop.test/done?a=1&&status=succeeded&b=2#x",
    "https://shop.test/done?status=succeeded&session_id=victim&ts=9999999999#top",
    "https://shop.test/done?status%00=succeeded",  # PHP cuts a name at its first NUL
    "https://shop.test/done?session_id%00x=victim",
    "https://shop.test/done?ts%0A=1",  # no name carries a control character
]
FINE_NAMES = [
    "https://shop.test/done?statuses=1&my_status=2&status_code=3&sig2=4&tsx=5",
    "https://shop.test/done?note=status%3Dsucceeded&x=session_id",  # values, not names
    "https://shop.test/done?status%3Dsucceeded=1",  # a name "status=succeeded"
    "https://shop.test/status=succeeded/ts=1",  # the path
    "https://shop.test/done#status=succeeded",  # the fragment never reaches the server
    "https://shop.test/done?session[id]=1",  # PHP: an array named "session"
]


@pytest.mark.parametrize("url", NAMING_THE_BRIDGES_OWN)
def test_a_return_url_naming_the_bridges_own_parameters_is_refused(url: str) -> None:
    with pytest.raises(ReturnURLRefusedError, match="session_id, status, ts, sig"):
        allowed_return_url(url, **ALLOWED)


@pytest.mark.parametrize("url", FINE_NAMES)
def test_names_that_only_look_like_the_bridges_are_accepted(url: str) -> None:
    assert allowed_return_url(url, **ALLOWED) == url


def test_the_document_refuses_what_the_bridge_refuses() -> None:
    pattern = documented_pattern(["https://shop.test"])
    document = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    for url in NAMING_THE_BRIDGES_OWN:
        if escaped(url) == url:
            assert not document.is_valid(url), url
            assert not re.search(pattern, url), url
    for url in FINE_NAMES:
        assert document.is_valid(url) and re.search(pattern, url), url


@pytest.mark.parametrize(
    "url",
    [
        "https://[shop.test/",
        "https://shop.test]/",
        "https://[shop.test]/",
        "https://[::1/",
        "https://sh[op.test/done",
        "https://[v1.x]/",
    ],
)
def test_a_return_url_that_does_not_parse_is_refused_not_raised(url: str) -> None:
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


@pytest.mark.parametrize(
    "return_url",
    [
        "https://shop.test/done?status=succeeded&session_id=victim&ts=9999999999",
        "https://shop.test/done?%73tatus=succeeded",
        "https://shop.test/done?sig=0",
        "https://[shop.example/",
        "https://shop.example]/",
        "https://[shop.test]/done",
    ],
)
async def test_a_return_url_the_outcome_cannot_safely_join_is_422(
    configured: Configured, return_url: str
) -> None:
    """Without the check the first was minted, and the customer of a failed payment went on to
    ``?status=succeeded&session_id=victim&ts=9999999999&...&status=failed&...&sig=<valid>``;
    the brackets were a 500."""
    async with configured(
        RETURN_URL=SHOP, RETURN_SECRET=SECRET, RETURN_ORIGINS="https://shop.example"
    ) as bridge:
        response = await mint(bridge, {"return_url": return_url})
        sessions = await bridge.partner.session("ps_1")
    assert response.status_code == 422
    error = (await response.get_json())["error"]
    assert error["code"] == "return_url_not_allowed" and error["message"]
    assert sessions.status_code == 404


@pytest.mark.parametrize(
    "carried", ["https://shop.test/done?status=succeeded", "https://[shop.test/done"]
)
async def test_a_token_carrying_such_a_url_sends_its_customer_to_return_url(
    configured: Configured, carried: str
) -> None:
    """A token minted before the check (here: minted around it) goes to BRIDGE_RETURN_URL."""
    async with configured(RETURN_URL=SHOP, RETURN_SECRET=SECRET) as bridge:
        await token_for(bridge)  # the session is known
        token = bridge.app.extensions["bridge"].tokens.mint("ps_1", carried).token
        await finish(bridge, "failed")
        location = await onward(bridge, token)
        back = await bridge.client.get(f"/pay/{token}/return")
    assert location.startswith("https://shop.test/done?order=7&session_id=ps_1&status=failed&")
    assert signed(location) and back.status_code == 200


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


# --- return_url fuzzed ----------------------------------------------------------------------------
# Every case comes from a fixed seed, as in test_fuzz.py, so a failure names a case that comes
# back on the next run. What an accepted URL must be is worked out here without the app's code.

FUZZ_SEED = 20_261_128
FUZZ_CASES = 20_000  # straight to allowed_return_url
FUZZ_REQUESTS = 1_500  # of those, through the token route and the customer's page
FUZZ_ORIGINS = "https://other.test:8443 http://localhost:8001"
BRIDGES_OWN = {"session_id", "status", "ts", "sig"}
PIECES: dict[str, list[str]] = {
    "scheme": ["https", "https", "http", "HTTPS", "hTTp", "ftp", "javascript", "", "ht tp"],
    "separator": ["://", "://", "://", ":/", ":", "//", ":\\\\", ":///", "://\t", ""],
    "userinfo": ["", "", "", "", "user@", "user:pw@", "@", "a@b@", "us%40er@", "shop.test@"],
    "host": [
        "shop.test",
        "shop.test",
        "other.test",
        "localhost",
        "SHOP.TEST",
        "shop.test.",
        "[::1]",
        "[shop.test",
        "shop.test]",
        "[shop.test]",
        "[shop.example",
        "shop.example]",
        "[v1.x]",
        "[::ffff:127.0.0.1]",
        "127.0.0.1",
        "xn--bcher-kva.test",
        "b\u00fccher.test",
        "%73hop.test",
        "sh%00op.test",
        "shop\u3002test",
        "\uff53hop.test",
        "shop.test\uff03",
        "",
        "-shop.test",
        "shop..test",
        "a" * 70 + ".test",
    ],
    "port": ["", "", "", ":443", ":8443", ":08443", ":8001", ":99999", ":0", ":", ":-1", ":1e3"]
    + [":\u0661\u0662", ":443:443", ":65536", ":8443]"],
    "path": ["", "/", "/done", "/done", "/a b", "/%", "/%zz", "/%C3%A9", "/\u00fc", "/..%2f"]
    + ["\\", "/;status=1", "/[x]", "//x", "/\u202e", "/\ud800", "/\U0001f600", "/'\"<>"],
    "query": ["", "", "?", "?a=1", "?a=1&b", "?status=succeeded", "?%73tatus=x", "?STATUS=x"]
    + ["?a=%", "?a=%zz", "?a=1&&", "?sig", "?ts=1;x", "?q=\u00fc", "?q=[]", "?status%5B%5D=1"]
    + ["?x=%00", "?x=\x7f", "?session.id=1", "?a=1;ts", "?statuses=1", "?+sig=1", "?x=%E2%80"],
    "fragment": ["", "", "#", "#top", "#a b", "#?status=1", "#\u00fc", "##", "#%"],
}
NOISE = "[]%@:/?#&;=\\ \t\r\n\x00\x7f\x85\u00a0\u2028\ufeff\ud800\udfff\u0130\u0131\u017f"
NOISE += "\U0001f600'\"<>"


def fuzzed_return_urls(count: int) -> Iterator[str]:
    """URL-ish strings: well-formed URLs of the allowed origins, broken ones, and noise."""
    rng = random.Random(FUZZ_SEED)
    origins = ["https://shop.test", "https://SHOP.test:443", *FUZZ_ORIGINS.split()]
    for _ in range(count):
        url = "".join(rng.choice(choices) for choices in PIECES.values())
        if rng.random() < 0.6:  # an allowed origin, the rest as above
            url = rng.choice(origins) + "".join(
                rng.choice(PIECES[piece]) for piece in ("path", "query", "fragment")
            )
        for _ in range(rng.choice((0, 0, 0, 1, 2, 3))):
            at = rng.randrange(len(url) + 1)
            url = url[:at] + rng.choice(NOISE) + url[at:]
        if rng.random() < 0.05:
            url = url[: rng.randrange(len(url) + 1)]
        if rng.random() < 0.03:
            url = "".join(rng.choice(NOISE + string.printable) for _ in range(rng.randrange(40)))
        yield url


def names_in(query: str) -> list[str]:
    """Every name in a query as a framework would read it (both separators)."""
    return [
        name for part in query.split(";") for name, _ in parse_qsl(part, keep_blank_values=True)
    ]


def allowed_origin(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or {"https": 443, "http": 80}[parts.scheme]
    origin = (parts.scheme, parts.hostname, port)
    return parts.username is None and origin in {
        ("https", "shop.test", 443),
        ("https", "other.test", 8443),
        ("http", "localhost", 8001),
    }


def check_carried(url: str, carried: str) -> None:
    """What an accepted return URL must be, worked out without the app's code."""
    assert carried.isascii() and not re.search(r"[\x00-\x20\x7f]", carried), (url, carried)
    assert allowed_origin(carried), (url, carried)
    names = {name.lower() for name in names_in(urlsplit(carried).query)}
    assert not names & BRIDGES_OWN, (url, carried)


def test_fuzzed_return_urls_are_accepted_safely_or_refused() -> None:
    allowed = {"return_url": SHOP, "origins": FUZZ_ORIGINS.split()}
    outcomes: Counter[str] = Counter()
    for url in fuzzed_return_urls(FUZZ_CASES):
        try:
            carried = allowed_return_url(url, **allowed)
        except ReturnURLRefusedError:
            outcomes["refused"] += 1
            continue
        check_carried(url, carried)
        outcomes["accepted"] += 1
    assert outcomes["accepted"] > FUZZ_CASES / 20 and outcomes["refused"] > FUZZ_CASES / 2


async def test_fuzzed_return_urls_through_the_token_route_and_the_page(
    configured: Configured,
) -> None:
    """201 or 422, never a 5xx; each accepted URL's customer goes on with exactly one status
    (the real one), signed; a token carrying any of them (as an older version might have
    minted) never breaks the page."""
    outcomes: Counter[int] = Counter()
    async with configured(
        RETURN_URL=SHOP, RETURN_SECRET=SECRET, RETURN_ORIGINS=FUZZ_ORIGINS, TOKEN_RATE_LIMIT=0
    ) as bridge:
        await token_for(bridge)
        await finish(bridge, "failed")
        tokens = bridge.app.extensions["bridge"].tokens
        for number, url in enumerate(fuzzed_return_urls(FUZZ_REQUESTS)):
            response = await mint(bridge, {"return_url": url})
            outcomes[response.status_code] += 1
            answer = await response.get_json()
            if response.status_code == 422:
                assert answer["error"]["code"] == "return_url_not_allowed", (url, answer)
                assert answer["error"]["message"], url
                if number % 4:
                    continue
                try:  # as if minted by a version that let it through
                    token = tokens.mint("ps_1", url).token
                except ValueError:  # a lone surrogate: no version could have
                    continue
                page = await bridge.client.get(f"/pay/{token}")
                assert page.status_code == 303, (url, page.status_code)
                assert page.headers["Location"].startswith("https://shop.test/done?order=7&")
                continue
            assert response.status_code == 201, (url, response.status_code, answer)
            page = await bridge.client.get(f"/pay/{answer['token']}")
            assert page.status_code == 303, (url, page.status_code)
            location = page.headers["Location"]
            check_carried(url, re.sub(r"[?&]session_id=ps_1&status=failed&[^#]*", "", location))
            query = urlsplit(location).query
            pairs = [(name.lower(), value) for name, value in parse_qsl(query)]
            assert [pair for pair in pairs if pair[0] in BRIDGES_OWN][:3] == [
                ("session_id", "ps_1"),
                ("status", "failed"),
                ("ts", str(NOW)),
            ], (url, location)
            assert signed(location), (url, location)
    assert set(outcomes) <= {201, 422}, outcomes
    assert outcomes[201] > FUZZ_REQUESTS / 20 and outcomes[422] > FUZZ_REQUESTS / 2, outcomes
