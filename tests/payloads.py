"""Smart Glocal webhook bodies, shaped as the provider's documentation shows them."""

from __future__ import annotations

from typing import Any

BANK_URL = "https://acs.bank.test/challenge"


def redirect(
    *,
    url: str | None = f"{BANK_URL}?foo=bar",
    base_url: str | None = BANK_URL,
    method: str = "POST",
    qs: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    instruction: dict[str, Any] = {
        "method": method,
        "qs": {"foo": "bar"} if qs is None else qs,
        "params": {"PaReq": "sdfew^//asdhbv", "MD": "abc75daefnn"} if params is None else params,
    }
    if url is not None:
        instruction["url"] = url
    if base_url is not None:
        instruction["base_url"] = base_url
    return {"type": "redirect", "redirect": instruction}


def inform(
    content: str = "https://qr.nspk.test/AS1000670LSS7DN18SJQDNP4B05KLJL2",
) -> dict[str, Any]:
    return {"type": "inform", "inform": {"qr": {"content": content, "img": None}}}


def payment(
    status: str = "pending",
    *,
    interaction: dict[str, Any] | None = None,
    error_code: str | None = None,
    refunds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "pm_1313",
        "status": status,
        "created_at": "2024-05-27T02:03:00.000000Z",
        "customer": {"reference": "user@sg.com"},
        "payment_details": {
            "type": "card",
            "card": {"brand": "visa", "last4": "8801", "bin": "444600"},
        },
        "amount_details": {"amount": 15000, "currency": "usd"},
        "transaction_info": {"rrn": "425307614918", "auth_code": "057441"},
    }
    if interaction is not None:
        item["customer_interaction"] = interaction
    if error_code is not None:
        item["error"] = {"code": error_code, "description": "declined by the issuer"}
    if refunds is not None:
        item["refunds"] = refunds
    return item


def webhook(
    kind: str,
    session_id: str = "ps_1",
    *,
    session_status: str = "in_progress",
    payment_status: str | None = None,
    interaction: dict[str, Any] | None = None,
    error_code: str | None = None,
    refunds: list[dict[str, Any]] | None = None,
    api: str = "v1",
    updated_at: str = "2027-01-15T06:00:00.000000Z",
    next_action: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A webhook of ``kind``; ``action_required`` gets a POST redirect unless told otherwise.
    ``updated_at`` is the provider's clock, which orders webhooks before a final status."""
    if kind == "action_required" and interaction is None:
        interaction = redirect()
    defaults = {"payment_finished": "succeeded", "payment_refunded": "succeeded"}
    item = payment(
        payment_status or defaults.get(kind, "pending"),
        interaction=interaction,
        error_code=error_code,
        refunds=refunds,
    )
    session = {
        "id": session_id,
        "status": session_status,
        "created_at": "2024-05-27T02:03:00.000000Z",
        "updated_at": updated_at,
        "acquiring_payments" if api == "v1" else "payment_list": [item],
    }
    if next_action is not None:
        session["next_action"] = next_action
    return {"type": kind, "session": session, **extra}
