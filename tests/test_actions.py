"""Bank forms and QR codes decided server-side, without an app."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from app.actions import BankStep, Elsewhere, QRCode, RefusedActionError, customer_action

from .payloads import BANK_URL, inform, redirect

ORIGIN = "https://acs.bank.test"


def form(*, allow_http: bool = False, **fields: Any) -> BankStep:
    action = customer_action(redirect(**fields), allow_http=allow_http)
    assert isinstance(action, BankStep)
    return action


def refused(instruction: dict[str, Any], *, allow_http: bool = False) -> str:
    with pytest.raises(RefusedActionError) as caught:
        customer_action({"type": "redirect", "redirect": instruction}, allow_http=allow_http)
    return str(caught.value)


def sent(step: BankStep) -> list[tuple[str, str]]:
    """The name/value pairs the bank receives: the form's fields, or the URL's query."""
    if step.method == "post":
        return list(step.fields)
    return parse_qsl(urlsplit(step.url).query, keep_blank_values=True)


# -- POST -----------------------------------------------------------------------------------------


def test_post_as_documented() -> None:
    assert customer_action(redirect(), allow_http=False) == BankStep(
        method="post",
        url=f"{BANK_URL}?foo=bar",
        fields=(("PaReq", "sdfew^//asdhbv"), ("MD", "abc75daefnn")),
        origin=ORIGIN,
    )


def test_post_keeps_every_param_in_order() -> None:
    params = {
        "TermUrl": "https://bridge.test/pay/t/return",
        "MD": "m",
        "PaReq": "p",
        "creq": "c",
        "threeDSSessionData": "s",
        "a": "1",
        "Z": "2",
    }
    assert form(params=params).fields == tuple(params.items())


def test_post_keeps_the_urls_query_string_untouched() -> None:
    url = f"{BANK_URL}?b=2&a=1&empty=&enc=x%2By%20z&dup=1&dup=2"
    assert form(url=url, qs={}).url == url


def test_method_defaults_to_post_and_ignores_case() -> None:
    instruction = redirect()["redirect"]
    del instruction["method"]
    action = customer_action({"type": "redirect", "redirect": instruction}, allow_http=False)
    assert isinstance(action, BankStep) and action.method == "post"
    assert form(method="post").method == "post"
    assert form(method="Get").method == "get"


def test_params_that_are_not_an_object_give_no_fields() -> None:
    instruction = redirect()["redirect"]
    instruction["params"] = [["PaReq", "x"]]
    action = customer_action({"type": "redirect", "redirect": instruction}, allow_http=False)
    assert isinstance(action, BankStep) and action.fields == ()
    del instruction["params"]
    action = customer_action({"type": "redirect", "redirect": instruction}, allow_http=False)
    assert isinstance(action, BankStep) and action.fields == ()


def test_param_values_that_are_not_text() -> None:
    params = {"n": 5, "t": True, "none": None, "tds": {"v": "2.2.0"}, "list": [1, 2]}
    assert form(params=params).fields == (
        ("n", "5"),
        ("t", "true"),
        ("none", ""),
        ("tds", '{"v":"2.2.0"}'),
        ("list", "[1,2]"),
    )


# -- url, base_url and qs -------------------------------------------------------------------------


def test_url_is_preferred_to_base_url() -> None:
    action = form(url="https://acs.bank.test/real?foo=bar", base_url="https://other.test/x")
    assert action.url == "https://acs.bank.test/real?foo=bar"
    assert action.origin == ORIGIN


def test_qs_already_in_url_is_not_repeated() -> None:
    assert form(url=f"{BANK_URL}?foo=bar", qs={"foo": "bar"}).url == f"{BANK_URL}?foo=bar"
    # The url's value wins over a differing qs value for the same name.
    assert form(url=f"{BANK_URL}?foo=bar", qs={"foo": "baz"}).url == f"{BANK_URL}?foo=bar"


def test_qs_pairs_the_url_lacks_are_appended() -> None:
    action = form(url=f"{BANK_URL}?foo=bar", qs={"foo": "bar", "sid": "42", "lang": "en"})
    assert action.url == f"{BANK_URL}?foo=bar&sid=42&lang=en"


def test_qs_appended_to_a_url_without_query() -> None:
    assert form(url=BANK_URL, qs={"sid": "42"}).url == f"{BANK_URL}?sid=42"
    assert form(url=f"{BANK_URL}?", qs={"sid": "42"}).url == f"{BANK_URL}?sid=42"


def test_qs_goes_before_the_fragment() -> None:
    action = form(url=f"{BANK_URL}?a=1#step", qs={"sid": "42"})
    assert action.url == f"{BANK_URL}?a=1&sid=42#step"


def test_base_url_and_qs_when_url_is_absent() -> None:
    assert form(url=None, qs={"foo": "bar"}).url == f"{BANK_URL}?foo=bar"
    assert form(url=None, qs={}).url == BANK_URL


@pytest.mark.parametrize("url", ["", 42, None, ["https://acs.bank.test"]])
def test_base_url_when_url_is_unusable(url: Any) -> None:
    instruction = redirect(url=None, qs={"foo": "bar"})["redirect"]
    instruction["url"] = url
    action = customer_action({"type": "redirect", "redirect": instruction}, allow_http=False)
    assert isinstance(action, BankStep) and action.url == f"{BANK_URL}?foo=bar"


def test_qs_values_are_encoded_in_the_url() -> None:
    action = form(url=None, qs={"q": "a b&c=d", "n": 7, "e": None, "u": "é"})
    assert action.url == f"{BANK_URL}?q=a+b%26c%3Dd&n=7&e=&u=%C3%A9"


# -- GET ------------------------------------------------------------------------------------------


def test_get_appends_params_to_the_query_it_keeps() -> None:
    action = form(
        method="GET",
        url=f"{BANK_URL}?foo=bar&x=1#frag",
        qs={"foo": "bar"},
        params={"creq": "c", "threeDSSessionData": "s"},
    )
    assert action == BankStep(
        method="get",
        url=f"{BANK_URL}?foo=bar&x=1&creq=c&threeDSSessionData=s#frag",
        fields=(),
        origin=ORIGIN,
    )


def test_get_with_base_url_and_qs() -> None:
    action = form(method="GET", url=None, qs={"sid": "42", "lang": "en"}, params={})
    assert (action.url, action.fields) == (f"{BANK_URL}?sid=42&lang=en", ())


def test_get_keeps_the_query_byte_for_byte() -> None:
    """Escapes in another charset, bare keys and %20 all reach the bank as the provider wrote."""
    query = "d=%C0%E1&flag&s=a%20b&a=x%2By&a=2"
    action = form(method="GET", url=f"{BANK_URL}?{query}", qs={}, params={"x": "é"})
    assert action.url == f"{BANK_URL}?{query}&x=%C3%A9"


def test_get_keeps_the_port_and_path() -> None:
    action = form(method="GET", url="https://acs.bank.test:8443/3ds/v2?x=1", qs={}, params={})
    assert action.url == "https://acs.bank.test:8443/3ds/v2?x=1"
    assert action.origin == "https://acs.bank.test:8443"


# -- refusals -------------------------------------------------------------------------------------


def test_http_refused_unless_allowed() -> None:
    message = refused(redirect(url="http://acs.bank.test/c")["redirect"])
    assert message == "the URL's scheme is not https"
    action = form(url="http://acs.bank.test/c", allow_http=True)
    assert (action.url, action.origin) == (
        "http://acs.bank.test/c?foo=bar",
        "http://acs.bank.test",
    )


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(document.domain)",
        "data:text/html,<script>alert(1)</script>",
        "data:text/html;base64,PHNjcmlwdD4=",
        "vbscript:msgbox(1)",
        "ftp://acs.bank.test/c",
        "file:///etc/passwd",
        "/challenge",
        "challenge?x=1",
        "//acs.bank.test/challenge",
        "acs.bank.test/challenge",
        "https:acs.bank.test/challenge",
        "https:///challenge",
        "https://",
        "https://acs.bank.test/a b",
        " https://acs.bank.test/challenge",
        "https://acs.bank.test/challenge ",
        "https://acs.bank.test/\tchallenge",
        "https://acs.bank.test/\nchallenge",
        "https://acs.bank.test/\r\nSet-Cookie:x=1",
        "https://acs.bank.test/\x00",
        "https://acs.bank.test/\x1f",
        "https://acs.bank.test/\x7f",
        "java\nscript:alert(1)",
        "https://user@acs.bank.test/challenge",
        "https://user:secret@acs.bank.test/challenge",
        "https://acs.bank.test@evil.test/challenge",
        "https://@acs.bank.test/challenge",
        "https://acs.bank.test:99999/challenge",
        "https://acs.bank.test:-1/challenge",
        "https://acs.bank.test:https/challenge",
        "https://[::1/challenge",
        "https://evil.test\\.acs.bank.test/challenge",
        "https://acs.bank.test\\@evil.test/",
        "https://acs.bank.test:0/challenge",
    ],
)
@pytest.mark.parametrize("allow_http", [False, True])
@pytest.mark.parametrize("method", ["POST", "GET"])
def test_refused_urls(url: str, allow_http: bool, method: str) -> None:
    refused(
        redirect(url=url, base_url=None, method=method, qs={})["redirect"], allow_http=allow_http
    )
    # base_url is held to the same rules when it is the one used.
    refused(
        redirect(url=None, base_url=url, method=method, qs={})["redirect"], allow_http=allow_http
    )


@pytest.mark.parametrize(
    "method", ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "", " POST", 1, None, ["POST"]]
)
def test_refused_methods(method: Any) -> None:
    instruction = redirect()["redirect"]
    instruction["method"] = method
    assert "method" in refused(instruction)


@pytest.mark.parametrize(
    ("url", "base_url"), [(None, None), ("", ""), (None, ""), ("", None), (None, 7)]
)
def test_missing_url_refused(url: Any, base_url: Any) -> None:
    instruction = redirect(url=None, base_url=None)["redirect"]
    if url is not None:
        instruction["url"] = url
    if base_url is not None:
        instruction["base_url"] = base_url
    assert "no URL" in refused(instruction)


def test_refused_action_is_a_value_error() -> None:
    assert issubclass(RefusedActionError, ValueError)


# -- field bytes ----------------------------------------------------------------------------------

BASE64_8K = base64.b64encode((bytes(range(256)) * 24)[:6143]).decode()  # 8192 chars, "="-padded

AWKWARD_VALUES = [
    "say \"hi\" & 'bye'",
    "<script>alert(1)</script>",
    "a > b < c",
    "&amp; &lt; &#39; &#x27;",
    "a+b/c==",
    "line one\nline two\r\nline three\rend",
    "été ₽ 支付 🙂",
    "  leading and trailing  ",
    "%41%2B",
    BASE64_8K,
]


def test_the_8k_value_is_8k() -> None:
    assert len(BASE64_8K) == 8192 and BASE64_8K.endswith("=")


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("value", AWKWARD_VALUES, ids=range(len(AWKWARD_VALUES)))
def test_field_values_come_out_byte_identical(method: str, value: str) -> None:
    action = form(method=method, params={"PaReq": value, "MD": value + "!"})
    fields = dict(sent(action))
    assert fields["PaReq"].encode() == value.encode()
    assert fields["MD"].encode() == (value + "!").encode()


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_fields_named_submit_and_action_are_kept(method: str) -> None:
    params = {"submit": "go", "action": "confirm", "method": "x", "PaReq": "p"}
    assert sent(form(method=method, url=BANK_URL, qs={}, params=params)) == list(params.items())


# -- inform ---------------------------------------------------------------------------------------


def test_qr_code_with_an_https_link() -> None:
    content = "https://qr.nspk.test/AS1000670LSS7DN18SJQDNP4B05KLJL2"
    qr = customer_action(inform(content), allow_http=False)
    assert isinstance(qr, QRCode) and (qr.content, qr.link) == (content, content)
    assert qr.image.startswith("data:image/svg+xml")


def test_qr_content_too_long_for_a_qr_code_is_finished_elsewhere() -> None:
    """The bridge cannot show it: the customer is told to finish elsewhere, never a 5xx."""
    too_long = {"type": "inform", "inform": {"qr": {"content": "A" * 5000}}}
    assert customer_action(too_long, allow_http=False) == Elsewhere()


@pytest.mark.parametrize(
    "url",
    ["https://acs.bank,upgrade-insecure-requests/x", "https://[::1]/acs", "https://acs;bank.test/"],
)
def test_hosts_that_cannot_go_into_a_csp_header_are_refused(url: str) -> None:
    refused(redirect(url=url, base_url=None)["redirect"])


def test_an_international_host_is_named_in_its_ascii_form() -> None:
    action = form(url="https://банк.рф/acs", qs={})
    assert action.origin == "https://xn--80ab2al.xn--p1ai"


@pytest.mark.parametrize(
    "content",
    [
        "http://qr.nspk.test/AS1000",
        "ST00012|Name=ООО Ромашка|PersonalAcc=40702810000000000000",
        "javascript:alert(1)",
        "data:text/html,hi",
        "qr.nspk.test/AS1000",
        "https://user@qr.nspk.test/AS1000",
        "https://qr.nspk.test/AS 1000",
        "https://[::1/AS1000",
    ],
)
def test_qr_code_without_a_link(content: str) -> None:
    qr = customer_action(inform(content), allow_http=False)
    assert isinstance(qr, QRCode) and (qr.content, qr.link) == (content, None)


def test_qr_code_http_link_only_when_allowed() -> None:
    content = "http://qr.nspk.test/AS1000"
    qr = customer_action(inform(content), allow_http=True)
    assert isinstance(qr, QRCode) and (qr.content, qr.link) == (content, content)


@pytest.mark.parametrize(
    "inform_part",
    [
        {"qr": {}},
        {"qr": {"content": ""}},
        {"qr": {"content": None, "img": "iVBORw0KGgo="}},
        {"qr": {"content": 42}},
    ],
)
def test_a_qr_code_without_content_is_finished_elsewhere(inform_part: dict[str, Any]) -> None:
    interaction = {"type": "inform", "inform": inform_part}
    assert customer_action(interaction, allow_http=False) == Elsewhere()


@pytest.mark.parametrize(
    "interaction",
    [
        {
            "type": "inform",
            "inform": {"notification": {"type": "sber_pay_widget", "order_id": "1"}},
        },
        {"type": "inform", "inform": {}},
        {"type": "inform", "inform": {"qr": None}},
        {"type": "inform", "inform": {"qr": "https://qr.test"}},
        {"type": "inform", "inform": None},
        {"type": "three_ds_method", "three_ds_method": {"url": "https://acs.bank.test/m"}},
        {"type": "app_confirmation"},
        {"type": "redirect", "redirect": {"method": "POST", "tds_data": {"acs": "opaque"}}},
    ],
)
def test_a_step_without_anything_to_show_is_finished_elsewhere(
    interaction: dict[str, Any],
) -> None:
    assert customer_action(interaction, allow_http=False) == Elsewhere()


def test_a_redirect_with_tds_data_and_a_url_still_goes_to_the_bank() -> None:
    instruction = redirect(params={"creq": "abc"})
    instruction["redirect"]["tds_data"] = {"threeDSServerTransID": "x", "nested": [1, 2]}
    step = customer_action(instruction, allow_http=False)
    assert isinstance(step, BankStep)
    assert step.fields == (("creq", "abc"),)  # tds_data is kept, never sent or read


@pytest.mark.parametrize(
    "details", [None, "https://acs.bank.test/", ["https://acs.bank.test/"], {"method": "POST"}]
)
def test_a_redirect_without_an_instruction_is_refused(details: Any) -> None:
    with pytest.raises(RefusedActionError):
        customer_action({"type": "redirect", "redirect": details}, allow_http=False)
