"""JSON request bodies: the partner API's, which may be left out, and the customer pages'."""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from quart import request

from .errors import APIError
from .schemas import problems

M = TypeVar("M", bound=BaseModel)


async def optional_body(model: type[M], shape: str) -> M:
    """A JSON body of ``model``; none (or only whitespace) is ``model()``. ``shape`` says what
    the body may be, in the 422's message."""
    body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if not body.strip():
        return model()
    return _parsed(body, model, shape)


async def required_body(model: type[M], shape: str, *, most: int) -> M:
    """A JSON body of ``model``, of at most ``most`` bytes (a 413 beyond): none is a 400."""
    body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    if len(body) > most:
        raise APIError(413, "body_too_large", f"the body is longer than {most} bytes")
    return _parsed(body, model, shape)


def _parsed(body: bytes, model: type[M], shape: str) -> M:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise APIError(400, "invalid_json", "the body is not JSON") from None
    try:
        return model.model_validate(document, strict=True)
    except ValidationError as error:
        where = problems(error, "body")
        raise APIError(422, "invalid_request", f"the body is {shape} ({where})") from None
