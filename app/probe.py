"""A signed test message to ``BRIDGE_RELAY_URL`` on demand, as webhook services offer: the
partner checks its endpoint and its verification before the first real payment.

``redirect-bridge relay-test`` and ``POST /api/v1/relay/test`` send one ``relay.test`` event,
signed and addressed as every relayed message is, but outside the durable line: nothing is
stored, retried or counted. They say what the partner answered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiohttp
from pydantic import BaseModel, Field
from quart import Blueprint, Response
from quart_schema import document_response
from standardwebhooks import Webhook

from .auth import partner_only
from .config import Settings
from .current import bridge
from .errors import APIError, ErrorAnswer
from .events import relay_test
from .ids import message_id
from .relay import ANSWER_READ_BYTES, message_headers, proxy_for
from .schemas import json_answer

SHOWN_BYTES = 2048  # of the partner's answer, enough to read an error message

bp = Blueprint("probe", __name__, url_prefix="/api/v1/relay")


@dataclass(frozen=True, slots=True)
class Probed:
    """What the partner answered a test message: its HTTP status (``None``: no answer, and
    ``error`` says why) and the start of its answer's body."""

    url: str
    message_id: str
    status: int | None
    answer: str
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def send_test(settings: Settings) -> Probed:
    """Send one signed ``relay.test`` event to ``BRIDGE_RELAY_URL`` and read the answer."""
    assert settings.relay_url is not None
    now = time.time()
    event, sent_id = relay_test(now), message_id(now)
    signers = [Webhook(secret) for secret in settings.relay_secrets]
    headers = message_headers(signers, sent_id, event.body, attempt=1)
    timeout = aiohttp.ClientTimeout(total=settings.relay_timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as client,
            client.post(
                settings.relay_url,
                data=event.body,
                headers=headers,
                allow_redirects=False,
                proxy=proxy_for(settings.relay_url),
            ) as answer,
        ):
            body = await answer.content.read(ANSWER_READ_BYTES)
            text = body[:SHOWN_BYTES].decode("utf-8", "replace")
            return Probed(settings.relay_url, sent_id, answer.status, text, None)
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        return Probed(settings.relay_url, sent_id, None, "", _why(error, settings))


def _why(error: BaseException, settings: Settings) -> str:
    """What went wrong, in words that carry no credential: aiohttp's own messages name URLs
    whole, the proxy's userinfo and the relay URL's query included."""
    if isinstance(error, TimeoutError):
        return f"no answer within {settings.relay_timeout:g} s (BRIDGE_RELAY_TIMEOUT)"
    if isinstance(error, aiohttp.ClientHttpProxyError):
        return f"the proxy answered {error.status} {error.message}"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect to {error.host}:{error.port} ({error.os_error.strerror})"
    if isinstance(error, aiohttp.ClientResponseError):
        return f"{error.status} {error.message}"
    return type(error).__name__


class ProbeAnswer(BaseModel):
    delivered: bool = Field(description="Whether the partner answered 2xx")
    message_id: str = Field(description="The test message's webhook-id")
    status: int | None = Field(description="The partner's HTTP status; null: no answer")
    answer: str = Field(description="The start of the partner's answer")
    error: str | None = Field(description="Why there was no answer, if there was none")


@bp.post("/test")
@partner_only
@document_response(ProbeAnswer)
@document_response(ErrorAnswer, 401)
@document_response(ErrorAnswer, 409)
async def test() -> Response:
    """Send a signed ``relay.test`` message to the relay's URL now and say what it answered."""
    settings = bridge().settings
    if settings.relay_url is None:
        raise APIError(409, "relay_off", "BRIDGE_RELAY_URL is not set: there is no relay")
    probed = await send_test(settings)
    return json_answer(
        ProbeAnswer(
            delivered=probed.delivered,
            message_id=probed.message_id,
            status=probed.status,
            answer=probed.answer,
            error=probed.error,
        )
    )
