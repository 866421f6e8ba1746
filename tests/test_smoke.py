from __future__ import annotations


async def test_journey(provider, partner, client) -> None:
    token = await partner.token()
    page = await client.get(f"/pay/{token}")
    assert page.status_code == 200
    await provider.deliver("action_required")
    page = await client.get(f"/pay/{token}")
    html = await page.get_data(as_text=True)
    assert 'action="https://acs.bank.test/challenge?foo=bar"' in html, html
    status = await client.get(f"/api/v1/status/{token}")
    print(await status.get_json(), status.headers)
    await provider.deliver("payment_finished", session_status="accepted")
    page = await client.get(f"/pay/{token}")
    print(page.headers)
    assert "Payment complete" in await page.get_data(as_text=True)
    print((await partner.session()).status_code, await (await partner.session()).get_json())
