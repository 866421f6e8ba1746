"""Request bodies of the partner API that may be left out."""

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
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise APIError(400, "invalid_json", "the body is not JSON") from None
    try:
        return model.model_validate(document, strict=True)
    except ValidationError as error:
        where = problems(error, "body")
        raise APIError(422, "invalid_request", f"the body is {shape} ({where})") from None
