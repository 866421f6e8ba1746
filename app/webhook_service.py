"""Smart Glocal's webhooks without the web framework: verify, parse, store durably, answer.

The one way a webhook is received, whoever carries the request: :mod:`app.front` below Quart
for a plain ``POST /webhooks/smart-glocal``, the Quart view (:mod:`app.webhooks`) for the rest.
A refusal is a :class:`app.refusals.RefusedWebhookError` (answered by
:func:`app.errors.refusal` on both paths), counted and logged here; storage trouble is the
store's :class:`app.store.StorageUnavailableError`.
"""

from __future__ import annotations

import json
import logging

from .bridge import Bridge
from .provider import MalformedWebhookError, meaning, parse_webhook
from .refusals import RefusedWebhookError
from .signature import HEADER, verify

log = logging.getLogger(__name__)
# Made once, not by jsonify or from a dict: quart-schema would build a pydantic adapter for
# every dict answer, a cost the busiest route should not pay (docs/benchmarks.md).
ANSWERS = {
    outcome: json.dumps({"status": outcome}).encode()
    for outcome in ("accepted", "duplicate", "ignored")
}


async def receive(the_bridge: Bridge, body: bytes, signature: str | None) -> bytes:
    """The answer's body to a webhook of ``body`` signed ``signature``, once it is stored."""
    # Verify before parse: nobody but the provider gets as far as the JSON decoder.
    if signature is None or not verify(the_bridge.settings.sg_public_keys, body, signature):
        message = f"{HEADER} is missing or does not verify"
        raise refused(the_bridge, 401, "invalid_signature", message)
    try:
        document = json.loads(body, parse_constant=_not_json)
    except ValueError:
        raise refused(the_bridge, 400, "invalid_json", "the body is not JSON") from None
    except RecursionError:
        raise refused(the_bridge, 400, "invalid_json", "the JSON is nested too deeply") from None
    try:
        webhook = parse_webhook(document, body)
    except MalformedWebhookError as error:
        raise refused(the_bridge, 422, "not_a_webhook", str(error)) from None
    if the_bridge.outdated(webhook):
        # A replay of a body older than retention keeps: it could bring back a session (and
        # its bank form) that retention deleted. It changes nothing and is not relayed.
        the_bridge.count_webhook(webhook.type, "ignored")
        log.info(
            "webhook ignored: %s for %s is older than the retention period",
            webhook.type,
            webhook.session_id,
        )
        return ANSWERS["ignored"]
    changed = await the_bridge.receive_webhook(body, webhook, signature, meaning(document))
    outcome = "ignored" if changed.ignored else "duplicate" if changed.duplicate else "accepted"
    status = changed.after.status.value if changed.after else None
    log.info("webhook %s: %s for %s, session %s", outcome, webhook.type, webhook.session_id, status)
    return ANSWERS[outcome]


def too_large(the_bridge: Bridge) -> RefusedWebhookError:
    """The refusal of a body over ``BRIDGE_WEBHOOK_MAX_BYTES``, counted and logged."""
    return refused(the_bridge, 413, "body_too_large", "the body is over the size limit")


def refused(the_bridge: Bridge, status: int, code: str, message: str) -> RefusedWebhookError:
    the_bridge.count_webhook(None, code)
    log.warning("webhook refused: %s", message)
    return RefusedWebhookError(status, code, message)


def _not_json(constant: str) -> None:
    """``NaN`` and ``Infinity``: Python's reader takes them, JSON has no such thing."""
    raise ValueError(f"{constant} is not JSON")
