"""One error type for the JSON API, and one place that turns errors into answers."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from quart import Quart, Response, abort, jsonify, render_template, request
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from .store import StorageUnavailableError

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


T = TypeVar("T")


def found(value: T | None) -> T:
    """``value``, or a plain 404 when there is none: the one place a view's lookup ends so."""
    if value is None:
        abort(404)
    return value


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def init_app(app: Quart) -> None:
    @app.errorhandler(APIError)
    async def api_error(error: APIError) -> tuple[Response, int]:
        response = jsonify(error_body(error.code, error.message))
        response.headers.update(error.headers)
        return response, error.status

    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> tuple[Response, int]:
        return jsonify(error_body("invalid_request", _validation_message(error))), 400

    @app.errorhandler(StorageUnavailableError)
    async def storage_unavailable(error: StorageUnavailableError) -> tuple[Response | str, int]:
        # Nothing was written; the provider retries a webhook answered 503.
        app.logger.warning("storage unavailable: %s", error)
        headers = {"Retry-After": "5"}
        if request.path.startswith("/pay/"):
            page = await render_template("errors/http.html", status=503)
            return Response(page, status=503, headers=headers, content_type="text/html"), 503
        body = error_body("storage_unavailable", "the storage cannot be reached; try again")
        response = jsonify(body)
        response.headers.update(headers)
        return response, 503

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> tuple[Response | str, int]:
        status = error.code or 500
        if request.path.startswith("/pay/"):
            return await render_template("errors/http.html", status=status), status
        code = _CODES.get(status, "http_error")
        response = jsonify(error_body(code, error.description or ""))
        for name, value in error.get_headers():  # Retry-After on a 429, Allow on a 405
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status


def _validation_message(error: RequestSchemaValidationError) -> str:
    details = getattr(error.validation_error, "errors", None)
    if callable(details):
        parts = [f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in details()]
        return "; ".join(parts) or "the request is not valid"
    return "the request is not valid"
