"""Absolute links to the bridge's own pages, from ``BRIDGE_PUBLIC_URL`` or the request."""

from __future__ import annotations

from typing import Any

from quart import url_for

from .bridge import bridge


def external_url(endpoint: str, **values: Any) -> str:
    public_url = bridge().settings.public_url
    if public_url is None:
        return url_for(endpoint, _external=True, **values)
    return public_url + url_for(endpoint, **values)


def pay_url(token: str) -> str:
    return external_url("pages.pay", token=token)


def status_url(token: str) -> str:
    return external_url("status.status", token=token)
