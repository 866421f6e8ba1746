"""One error type for the JSON API, and one place that turns errors into answers: the
refusals the domain raises (:func:`refusal`, used within Quart and by :mod:`app.front` below
it alike), and the HTTP errors of Quart and werkzeug."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from quart import Quart, Response, abort, render_template, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException, NotFound

from .refusals import (
    InvalidWaitError,
    RefusedWebhookError,
    TooManyRequestsError,
    UnknownTokenError,
)
from .schemas import problems
from .store import StorageUnavailableError

STORAGE_RETRY_AFTER = "5"  # seconds

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorAnswer(BaseModel):
    """Every JSON error: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class APIError(Exception):
    """An answer of the JSON API that is not a success."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    @property
    def body(self) -> bytes:
        return error_json(self.code, self.message)

    def response(self) -> Response:
        return Response(self.body, self.status, self.headers, content_type="application/json")


def refusal(error: Exception) -> APIError | None:
    """The JSON API's answer to a refusal the domain raised; ``None`` for any other error."""
    if isinstance(error, UnknownTokenError):
        return APIError(404, _CODES[404], NotFound.description)
    if isinstance(error, InvalidWaitError):
        return APIError(400, "invalid_request", str(error))
    if isinstance(error, TooManyRequestsError):
        headers = {"Retry-After": str(error.retry_after)}
        return APIError(429, _CODES[429], str(error), headers)
    if isinstance(error, RefusedWebhookError):
        return APIError(error.status, error.code, str(error))
    if isinstance(error, StorageUnavailableError):  # nothing was written; try again
        message = "the storage cannot be reached; try again"
        return APIError(503, "storage_unavailable", message, {"Retry-After": STORAGE_RETRY_AFTER})
    return None


T = TypeVar("T")


def found(value: T | None) -> T:
    """``value``, or a plain 404 when there is none: the one place a view's lookup ends so."""
    if value is None:
        abort(404)
    return value


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_json(code: str, message: str) -> bytes:
    """:func:`error_body` as JSON, written as Quart's ``jsonify`` writes it."""
    document = json.dumps(error_body(code, message), separators=(",", ":"), sort_keys=True)
    return f"{document}\n".encode()


def init_app(app: Quart) -> None:
    @app.errorhandler(APIError)
    async def api_error(error: APIError) -> Response:
        return error.response()

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> Response:
        return APIError(400, "invalid_request", _validation_message(error)).response()

    async def refused(error: Exception) -> Response:
        answer = refusal(error)
        assert answer is not None
        if isinstance(error, StorageUnavailableError):  # the provider retries a webhook on 503
            app.logger.warning("storage unavailable: %s", error)
        if request.path.startswith("/pay/"):
            page = await render_template("errors/http.html", status=answer.status)
            return Response(page, answer.status, answer.headers, content_type="text/html")
        return answer.response()

    for refused_by_the_domain in (
        UnknownTokenError,
        InvalidWaitError,
        TooManyRequestsError,
        RefusedWebhookError,
        StorageUnavailableError,
    ):
        app.register_error_handler(refused_by_the_domain, refused)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> tuple[Response | str, int]:
        status = error.code or 500
        if request.path.startswith("/pay/"):
            return await render_template("errors/http.html", status=status), status
        code = _CODES.get(status, "http_error")
        response = APIError(status, code, error.description or "").response()
        for name, value in error.get_headers():  # Allow on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status


def _validation_message(error: RequestSchemaValidationError) -> str:
    if isinstance(error.validation_error, ValidationError):
        return problems(error.validation_error) or "the request is not valid"
    return "the request is not valid"
