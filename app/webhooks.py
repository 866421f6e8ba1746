"""``POST /webhooks/smart-glocal`` within Quart: what :mod:`app.front` leaves to the app (a
query string, a root path, storage trouble on the first try), and the route's documentation."""

from __future__ import annotations

from quart import Blueprint, Response, request
from quart_schema import document_response
from werkzeug.exceptions import RequestEntityTooLarge

from . import webhook_service
from .current import bridge
from .errors import ErrorAnswer
from .routes import WEBHOOKS
from .schemas import WebhookAnswer
from .signature import HEADER

bp = Blueprint("webhooks", __name__)


@bp.post(WEBHOOKS)
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
        raise webhook_service.too_large(bridge()) from None
    answer = await webhook_service.receive(bridge(), body, request.headers.get(HEADER))
    return Response(answer, content_type="application/json")
