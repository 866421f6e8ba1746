"""The bridge under a path of the partner's own domain: ``BRIDGE_PUBLIC_URL`` is
``https://shop.example/bridge`` and a proxy forwards ``/bridge/…`` as ``/…``. Every link a
customer page makes, and every redirect the bridge answers, stays under that path; none points
at a host the request chose. (tests/browser/test_prefix.py walks the same behind a real nginx.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app import create_app
from app.config import ConfigError, load_settings

from .conftest import Configured, Deployment, FakeClock, Partner, public_pem, read_twice
from .payloads import BANK_URL, inform, redirect
from .test_pages import Page, settings_of

PREFIX = "/bridge"
PUBLIC_URL = f"https://shop.example{PREFIX}"
SHOP = "https://shop.example/checkout/done"
# Links that are not the bridge's: the bank's, a QR code's, the shop's.
ELSEWHERE = ("https://acs.bank.test/", "https://qr.nspk.test/", SHOP)
HOSTILE = {"Host": "evil.example"}  # what any client may send: it must not matter
STRANGE = {"type": "app_confirmation", "app_confirmation": {"bank": "x"}}


@pytest.fixture
async def bridge(configured: Configured) -> AsyncIterator[Deployment]:
    async with configured(PUBLIC_URL=PUBLIC_URL) as deployment:
        yield deployment


def assert_under_the_prefix(html: str) -> None:
    """Every link of the page is the bridge's own under the prefix, the bank's, the shop's or
    drawn in the page (``data:``); so are the page script's URLs."""
    page = Page(html)
    for link in [*page.links, *(form["action"] for form in page.forms)]:
        if not link.startswith(("data:", *ELSEWHERE)):
            assert link.startswith(f"{PREFIX}/"), link
    assert f"{PREFIX}/static/css/bridge.css" in page.links
    assert f"{PREFIX}/static/favicon.svg" in page.links
    assert "evil.example" not in html
    if "bridge-page" in html:  # the 404 page has no script
        settings = settings_of(html)
        assert settings["status_url"].startswith(f"{PREFIX}/api/v1/status/")
        assert settings["next_url"].startswith(f"{PREFIX}/pay/")
        assert settings["onward_url"] in (None, *[link for link in page.links if SHOP in link])


async def page_of(bridge: Deployment, path: str, status: int = 200) -> str:
    """The page at ``path``, read twice (built, then as app.front keeps it), the same bytes."""
    response = await read_twice(bridge.client, path, headers=HOSTILE)
    assert response.status_code == status
    return str(await response.get_data(as_text=True))


@pytest.mark.parametrize(
    "public_url",
    [
        "https://shop.example//bridge",
        "https://s.example/a//b/",
        "https://shop.example/\\evil.example",  # browsers read /\evil.example as //evil.example
        "https://shop.example/bridge/../account",
        "https://shop.example/./bridge",
        "https://shop.example/my bridge",
        "https://shop.example/bridge%2F..",
    ],
)
def test_a_path_that_could_leave_its_place_is_refused(
    provider_key: rsa.RSAPrivateKey, public_url: str
) -> None:
    """Links under ``//bridge/…`` would be to the host ``bridge`` (protocol-relative), and a
    backslash or a dot segment could take them out of the prefix: only plain segments."""
    settings = {"SECRET_KEY": "s" * 32, "SG_PUBLIC_KEY": public_pem(provider_key)}
    for fine in (PUBLIC_URL, "https://shop.example/pay-v2/bridge_1.0~x"):
        assert load_settings({}, {**settings, "PUBLIC_URL": fine}).public_url == fine
    with pytest.raises(ConfigError, match="^BRIDGE_PUBLIC_URL: "):
        load_settings({}, {**settings, "PUBLIC_URL": public_url})


async def test_every_link_of_every_customer_page_is_under_the_prefix(
    bridge: Deployment, clock: FakeClock
) -> None:
    partner, provider = bridge.partner, bridge.provider
    pages = {}
    steps = {
        "bank": redirect(),
        "bank_get": redirect(method="GET", params={"creq": "x"}),
        "qr": inform(),
        "elsewhere": STRANGE,
        "refused": redirect(url="http://127.0.0.1:9/acs", base_url=None),
    }
    for name, interaction in steps.items():
        token = await partner.token(f"ps_{name}")
        await provider.deliver("action_required", f"ps_{name}", interaction=interaction)
        pages[name] = await page_of(bridge, f"/pay/{token}", 502 if name == "refused" else 200)
    waiting = await partner.token("ps_waiting")
    pages["waiting"] = await page_of(bridge, f"/pay/{waiting}")
    pages["waiting_ru"] = await page_of(bridge, f"/pay/{waiting}?lang=ru")
    done = await partner.token("ps_done")
    await provider.deliver("payment_finished", "ps_done", session_status="accepted")
    pages["outcome"] = await page_of(bridge, f"/pay/{done}")

    back = await partner.token("ps_back")
    await provider.deliver("action_required", "ps_back")
    response = await bridge.client.post(
        f"/pay/{back}/return", form={"PaRes": "bank-answer"}, headers=HOSTILE
    )
    assert response.status_code == 200
    pages["return"] = await response.get_data(as_text=True)
    assert "Checking the result" in pages["return"]
    assert settings_of(pages["return"])["next_url"] == f"{PREFIX}/pay/{back}?returned=1"

    pages["not_found"] = await page_of(bridge, "/pay/garbage", 404)
    expired = await partner.token("ps_expired")
    await provider.deliver("action_required", "ps_expired")
    clock.advance(3600)
    pages["expired"] = await page_of(bridge, f"/pay/{expired}", 410)

    for name, html in pages.items():
        try:
            assert_under_the_prefix(html)
        except AssertionError as error:
            raise AssertionError(f"the {name} page: {error}") from None
    assert Page(pages["bank"]).forms[0]["action"] == f"{BANK_URL}?foo=bar"


async def test_the_outcome_page_links_to_the_shop_and_stays_under_the_prefix(
    configured: Configured,
) -> None:
    async with configured(PUBLIC_URL=PUBLIC_URL, RETURN_URL=SHOP) as bridge:
        token = await bridge.partner.token()
        await bridge.provider.deliver("action_required")
        await bridge.client.get(f"/pay/{token}/return", headers=HOSTILE)
        await bridge.provider.deliver("payment_finished", session_status="accepted")
        response = await bridge.client.get(f"/pay/{token}/return", headers=HOSTILE)
        html = await response.get_data(as_text=True)
    assert "Payment complete" in html
    assert settings_of(html)["onward_url"].startswith(SHOP)
    assert_under_the_prefix(html)


async def test_the_partner_api_and_the_status_api_link_under_the_prefix(
    bridge: Deployment,
) -> None:
    minted = await bridge.client.post(
        "/api/v1/sessions/ps_1/tokens", headers={**bridge.partner.headers, **HOSTILE}
    )
    links = await minted.get_json()
    token = links["token"]
    assert links["pay_url"] == f"{PUBLIC_URL}/pay/{token}"
    assert links["status_url"] == f"{PUBLIC_URL}/api/v1/status/{token}"
    assert links["return_url"] == f"{PUBLIC_URL}/pay/{token}/return"
    await bridge.provider.deliver("action_required")
    status = await read_twice(bridge.client, f"/api/v1/status/{token}", headers=HOSTILE)
    assert (await status.get_json())["action_url"] == f"{PUBLIC_URL}/pay/{token}"


# Paths werkzeug answers with a redirect to the path with its slashes merged. It built the
# Location from the Host header: a client chose where the customer was sent.
MERGED = [
    ("/pay//{token}", "/pay/{token}"),
    ("/pay/{token}//return?lang=ru", "/pay/{token}/return?lang=ru"),
    ("/api/v1//status/{token}?wait=1", "/api/v1/status/{token}?wait=1"),
    ("/static//css/bridge.css", "/static/css/bridge.css"),
]


@pytest.mark.parametrize(("asked", "canonical"), MERGED)
async def test_a_redirect_to_merged_slashes_stays_under_the_public_url(
    bridge: Deployment, asked: str, canonical: str
) -> None:
    token = await bridge.partner.token()
    response = await bridge.client.get(asked.format(token=token), headers=HOSTILE)
    assert response.status_code == 308
    assert response.headers["Location"] == PUBLIC_URL + canonical.format(token=token)
    assert "evil.example" not in await response.get_data(as_text=True)


@pytest.mark.parametrize("root_path", ["", "/bridge"])
@pytest.mark.parametrize(("asked", "canonical"), MERGED)
async def test_without_a_public_url_the_redirect_is_a_path_of_this_host(
    config: dict[str, Any], clock: FakeClock, root_path: str, asked: str, canonical: str
) -> None:
    settings = {name: value for name, value in config.items() if name != "PUBLIC_URL"}
    app = create_app(settings, clock=clock)
    async with app.test_app():
        client = app.test_client()
        token = await Partner(client).token()
        # As ASGI servers give it: the path with the root path, which Quart takes off.
        path = root_path + asked.format(token=token)
        response = await client.get(path, headers=HOSTILE, root_path=root_path)
    assert response.status_code == 308
    assert response.headers["Location"] == root_path + canonical.format(token=token)


@pytest.mark.parametrize(
    "asked", ["/static//..//..//account/delete", "/pay//../../account", "/static//./x/../../y"]
)
async def test_a_merged_path_with_dot_segments_is_not_redirected(
    bridge: Deployment, asked: str
) -> None:
    """A browser resolves ``..`` in a Location: ``/bridge/static/../../account`` is the shop's
    own ``/account``, outside the prefix. Such a path is no route of the bridge's."""
    response = await bridge.client.get(asked, headers=HOSTILE)
    assert response.status_code == 404
    assert "Location" not in response.headers


async def test_a_path_with_leading_slashes_is_the_page_itself(bridge: Deployment) -> None:
    """werkzeug reads ``//pay/T`` as ``/pay/T`` (a redirect to ``//…`` would leave the host):
    the page, with its customer headers and its links under the prefix."""
    token = await bridge.partner.token()
    response = await bridge.client.get(f"//pay/{token}", headers=HOSTILE)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" in response.headers
    assert_under_the_prefix(await response.get_data(as_text=True))
