"""What ``/openapi.json`` says beyond the models: the rules and answers the decorators cannot."""

from __future__ import annotations

from typing import Any

from quart_schema import OpenAPIProvider
from werkzeug.routing import BaseConverter, Rule

from .config import Settings
from .provider import SESSION_ID_PATTERN
from .returns import allowed_origins, documented_pattern

_ERROR = {"$ref": "#/components/schemas/ErrorAnswer"}
_NOT_NOW = {
    "description": "Try again later (see Retry-After)",
    "content": {"application/json": {"schema": _ERROR}},
}
# One Server-Sent Event: ``event: status``, the answer's ETag as ``id``, the answer as ``data``.
_EVENT = {
    "type": "object",
    "properties": {
        "event": {"const": "status"},
        "id": {"type": "string"},
        "data": {"type": "string", "description": "a StatusAnswer, as JSON"},
    },
}
# quart-schema keys responses by status code as a number.
_EXTRA_ANSWERS: dict[str, dict[int, Any]] = {
    "status.status": {
        304: {"description": "Not modified: the ETag offered is the current one"},
        429: _NOT_NOW,
    },
    "status.events": {429: _NOT_NOW},
    # Every partner route: too many wrong keys from one address.
    "api.create_token": {429: _NOT_NOW},
    "api.read_session": {429: _NOT_NOW},
    "history.events": {429: _NOT_NOW},
    "deliveries.deliveries": {429: _NOT_NOW},
    "deliveries.retry": {202: {"description": "Back in line"}, 429: _NOT_NOW},
    "deliveries.retry_all": {429: _NOT_NOW},
}


class BridgeOpenAPI(OpenAPIProvider):
    def build_path_parameter(self, name: str, converter: BaseConverter) -> dict[str, Any]:
        parameter = super().build_path_parameter(name, converter)
        if name == "session_id":
            parameter["schema"]["pattern"] = SESSION_ID_PATTERN
        return parameter

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        for operation in next(iter(paths.values())).values():
            responses = operation.setdefault("responses", {})
            responses.update(_EXTRA_ANSWERS.get(rule.endpoint or "", {}))
            if rule.rule.startswith(("/api/", "/webhooks/")):
                responses[503] = {
                    "description": "The storage cannot be reached; nothing was written",
                    "content": {"application/json": {"schema": _ERROR}},
                }
            if rule.endpoint == "status.events" and 200 in responses:
                responses[200]["content"] = {"text/event-stream": {"schema": _EVENT}}
            if rule.endpoint == "api.create_token":
                _document_return_url(operation, self._app.extensions["bridge"].settings)
            if rule.endpoint == "status.status":
                operation.setdefault("parameters", []).append(
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                )
            if rule.endpoint == "webhooks.receive":
                operation.setdefault("parameters", []).append(
                    {
                        "name": "X-PARTNER-SIGN",
                        "in": "header",
                        "required": True,
                        "description": "base64 RSA PKCS#1 v1.5 SHA-256 signature of the body",
                        "schema": {"type": "string"},
                    }
                )
                operation["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["type", "session"],
                                "properties": {
                                    "type": {"type": "string"},
                                    "session": {
                                        "type": "object",
                                        "required": ["id"],
                                        "properties": {
                                            "id": {"type": "string", "pattern": SESSION_ID_PATTERN}
                                        },
                                    },
                                },
                            }
                        }
                    },
                }
        return paths, components


def _document_return_url(operation: dict[str, Any], settings: Settings) -> None:
    """The return URLs a token may carry depend on the settings: the document names them."""
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    origins = allowed_origins(return_url=settings.return_url, origins=settings.return_origins)
    if origins:
        text, *_ = schema["properties"]["return_url"]["anyOf"]
        text["pattern"] = documented_pattern(origins)
    else:
        del schema["properties"]["return_url"]
        schema["description"] = (
            "Nothing, or {}: no return_url is accepted while neither BRIDGE_RETURN_URL nor"
            " BRIDGE_RETURN_ORIGINS is set."
        )
