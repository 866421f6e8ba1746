"""``POST /webhooks/smart-glocal``: verify, parse, store durably, then answer."""

from __future__ import annotations

import json
import logging

from quart import Blueprint, Response, request
from quart_schema import document_response
from werkzeug.exceptions import RequestEntityTooLarge

from .current import bridge
from .errors import APIError, ErrorAnswer
from .provider import MalformedWebhookError, meaning, parse_webhook
from .schemas import WebhookAnswer
from .signature import HEADER, verify

log = logging.getLogger(__name__)
bp = Blueprint("webhooks", __name__)
_ANSWERS = {
    outcome: json.dumps({"status": outcome}).encode()
    for outcome in ("accepted", "duplicate", "ignored")
}


@bp.post("/webhooks/smart-glocal")
@document_response(WebhookAnswer)
@document_response(ErrorAnswer, 400)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 413)
@document_response(ErrorAnswer, 422)
async def receive() -> Response:
    """Smart Glocal's webhooks, signed with ``X-PARTNER-SIGN``; stored before the answer."""
    try:
        body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    except RequestEntityTooLarge:
        raise _refused(413, "body_too_large", "the body is over the size limit") from None
    # Verify before parse: nobody but the provider gets as far as the JSON decoder.
    signature = request.headers.get(HEADER)
    if signature is None or not verify(bridge().settings.sg_public_keys, body, signature):
        raise _refused(401, "invalid_signature", f"{HEADER} is missing or does not verify")
    try:
        document = json.loads(body, parse_constant=_not_json)
    except ValueError:
        raise _refused(400, "invalid_json", "the body is not JSON") from None
    except RecursionError:
        raise _refused(400, "invalid_json", "the JSON is nested too deeply") from None
    try:
        webhook = parse_webhook(document, body)
    except MalformedWebhookError as error:
        raise _refused(422, "not_a_webhook", str(error)) from None
    if bridge().outdated(webhook):
        # A replay of a body older than retention keeps: it could bring back a session (and
        # its bank form) that retention deleted. It changes nothing and is not relayed.
        bridge().count_webhook(webhook.type, "ignored")
        log.info(
            "webhook ignored: %s for %s is older than the retention period",
            webhook.type,
            webhook.session_id,
        )
        return Response(_ANSWERS["ignored"], content_type="application/json")
    changed = await bridge().receive_webhook(body, webhook, signature, meaning(document))
    outcome = "ignored" if changed.ignored else "duplicate" if changed.duplicate else "accepted"
    status = changed.after.status.value if changed.after else None
    log.info("webhook %s: %s for %s, session %s", outcome, webhook.type, webhook.session_id, status)
    # Made here, not by jsonify or from a dict: quart-schema would build a pydantic adapter for
    # every dict answer, a cost the busiest route should not pay (docs/benchmarks.md).
    return Response(_ANSWERS[outcome], content_type="application/json")


def _refused(status: int, code: str, message: str) -> APIError:
    bridge().count_webhook(None, code)
    log.warning("webhook refused: %s", message)
    return APIError(status, code, message)


def _not_json(constant: str) -> None:
    """``NaN`` and ``Infinity``: Python's reader takes them, JSON has no such thing."""
    raise ValueError(f"{constant} is not JSON")
