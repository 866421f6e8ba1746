"""schemathesis against ``/openapi.json``: every documented operation, in-process over ASGI.

schemathesis loads the document from the app and calls the app through its own ASGI client
(which runs the app's start-up and shut-down on its own event loop), with the partner's Bearer
key on every request. Every check it has runs: no 5xx, answers and content types as documented,
documented statuses only, schema-valid requests accepted and schema-invalid ones refused, and
auth enforced where it is declared.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation.modes import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app import bridge as bridge_module
from app import create_app, status_service
from app.signature import sign

from .conftest import API_KEY
from .payloads import webhook

AUTH = {"Authorization": f"Bearer {API_KEY}"}
EXAMPLES = 50  # per operation and generation mode: about 10 s per engine
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
SESSIONS = {
    "ps_pending": [],
    "ps_action": [webhook("action_required", "ps_action")],
    "ps_done": [
        webhook("action_required", "ps_done"),
        webhook("payment_finished", "ps_done", session_status="accepted"),
    ],
    "ps_failed": [webhook("payment_finished", "ps_failed", payment_status="failed")],
}


async def seed(config: dict[str, Any], key: rsa.RSAPrivateKey) -> dict[str, list[str]]:
    """Sessions in several states and tokens for them, so not every case is a 404."""
    application = create_app(config)
    known: dict[str, list[str]] = {"session_id": [], "token": []}
    async with application.test_app():
        client = application.test_client()
        for session_id, payloads in SESSIONS.items():
            response = await client.post(f"/api/v1/sessions/{session_id}/tokens", headers=AUTH)
            known["token"].append((await response.get_json())["token"])
            known["session_id"].append(session_id)
            for payload in payloads:
                body = json.dumps(payload).encode()
                headers = {"X-PARTNER-SIGN": sign(key, body)}
                answer = await client.post("/webhooks/smart-glocal", data=body, headers=headers)
                assert answer.status_code == 200
    return known


class Bridge:
    def __init__(self, schema: Any, known: dict[str, list[str]]) -> None:
        self.schema = schema
        self.known = known

    def operation(self, method: str, path: str) -> Any:
        return self.schema[path][method]


@pytest.fixture
def bridge(
    config: dict[str, Any], provider_key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Bridge]:
    # An event stream lasts 5 minutes with a comment every 15 s; here it ends within a second,
    # so a case with a real token reads the whole stream.
    monkeypatch.setattr(status_service, "STREAM_SECONDS", 0.3)
    monkeypatch.setattr(status_service, "KEEP_ALIVE_SECONDS", 0.1)
    # Hundreds of wrong keys come from one address here; the throttle has tests of its own.
    monkeypatch.setattr(bridge_module, "KEY_GUESSES", 0)
    known = asyncio.run(seed(config, provider_key))
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(config))

    @schema.hook
    def flatmap_path_parameters(context: Any, parameters: dict[str, Any]) -> Any:
        # Half the cases name a real session or token, so answers other than 404 are checked too.
        for name, values in known.items():
            if name in (parameters or {}):
                real = st.sampled_from([{**parameters, name: value} for value in values])
                return st.one_of(st.just(parameters), real)
        return st.just(parameters)

    @schema.hook
    def map_case(context: Any, case: Any) -> Any:
        # A real token's long-poll would hold for up to ?wait= seconds; 0 is as valid and quick.
        wait = (case.query or {}).get("wait")
        token = (case.path_parameters or {}).get("token")
        number = isinstance(wait, int | float) and not isinstance(wait, bool)
        if token in known["token"] and number and 0 < wait <= 30:  # 15.0 is an integer too
            case.query["wait"] = 0
        return case

    yield Bridge(schema, known)
    asgi.shutdown_lifespans()  # closes the app's database pool on the loop that opened it


def fuzz(operation: Any, mode: GenerationMode, problems: dict[str, str]) -> None:
    """``EXAMPLES`` generated cases of one operation; each distinct failing check noted once."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        # The partner's key goes with every case, so a case whose only flaw is a missing
        # Authorization header is no longer flawed: "schema-violating request accepted" would
        # blame the app for the harness. Every other check, no 5xx first, still applies.
        excluded = [negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
        try:
            case.call_and_validate(headers=AUTH, timeout=5, excluded_checks=excluded)
        except FailureGroup as group:  # every failing check of this case
            for failure in group.exceptions:
                problems.setdefault(f"{operation.label} [{mode}]: {failure.title}", str(group))
        except Exception as error:
            where = f"{operation.label} [{mode}]: {error!r}"
            problems.setdefault(where, f"{case.path_parameters} {case.query}")

    try:
        run()
    except Unsatisfiable:  # nothing in this operation can be made schema-invalid
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_every_documented_operation_passes_every_check(bridge: Bridge) -> None:
    problems: dict[str, str] = {}
    operations = [result.ok() for result in bridge.schema.get_all_operations()]
    assert {operation.label for operation in operations} == {
        "POST /webhooks/smart-glocal",
        "POST /api/v1/sessions/{session_id}/tokens",
        "GET /api/v1/sessions/{session_id}",
        "GET /api/v1/sessions/{session_id}/events",
        "GET /api/v1/relay/deliveries",
        "POST /api/v1/relay/deliveries/{delivery_id}/retry",
        "POST /api/v1/relay/deliveries/retry",
        "POST /api/v1/relay/test",
        "GET /api/v1/status/{token}",
        "GET /api/v1/status/{token}/events",
    }
    for operation in operations:
        for mode in GenerationMode:
            fuzz(operation, mode, problems)
    assert not problems, "\n\n".join(f"=== {key}\n{text}" for key, text in problems.items())


def test_the_document_describes_what_the_app_answers(bridge: Bridge) -> None:
    """Answers the contract promises, checked one by one against the document: each named
    discrepancy is a place where an integrator reading /openapi.json would be misled."""
    problems: list[str] = []
    token = bridge.known["token"][1]  # ps_action

    def conforms(what: str, case: Any, **call: Any) -> Any:
        response = case.call(headers={**AUTH, **call.pop("headers", {})}, timeout=5, **call)
        try:
            case.validate_response(response, checks=CONFORMANCE)
        except FailureGroup as group:
            titles = ", ".join(failure.title for failure in group.exceptions)
            problems.append(f"{what}: {response.status_code} {titles}")
        return response

    # A session id the app refuses (422) must be one the document's parameter schema refuses.
    tokens = bridge.operation("POST", "/api/v1/sessions/{session_id}/tokens")
    (parameter,) = [p for p in tokens.definition.raw["parameters"] if p["name"] == "session_id"]
    documented = jsonschema_rs.validator_for(parameter["schema"])
    for refused in ["a b", "x" * 257, "nul\x00"]:
        response = conforms(
            f"token for {refused[:12]!r}", tokens.Case(path_parameters={"session_id": refused})
        )
        if response.status_code == 422 and documented.is_valid(refused):
            problems.append(
                f"session_id {refused[:12]!r} is answered 422 but is valid by its documented "
                f"schema {parameter['schema']}"
            )

    # The event stream is documented; its content type must be what it sends.
    events = bridge.operation("GET", "/api/v1/status/{token}/events")
    conforms("event stream", events.Case(path_parameters={"token": token}))

    # ETag and If-None-Match: 304 is part of the contract.
    status_operation = bridge.operation("GET", "/api/v1/status/{token}")
    first = conforms("status", status_operation.Case(path_parameters={"token": token}))
    (etag,) = first.headers["etag"]  # schemathesis keeps every header as a list
    conforms(
        "status with If-None-Match",
        status_operation.Case(path_parameters={"token": token}, headers={"If-None-Match": etag}),
    )

    # The status API is rate limited per token (120 a minute by default): 429 with Retry-After.
    limited = None
    for _ in range(130):
        response = status_operation.Case(path_parameters={"token": token}).call(timeout=5)
        if response.status_code == 429:
            limited = response
            break
    assert limited is not None, "the status API was never rate limited"
    conforms("status over the rate limit", status_operation.Case(path_parameters={"token": token}))

    # The webhook endpoint's document says how to call it: the signature header and a body.
    receive = bridge.operation("POST", "/webhooks/smart-glocal").definition.raw
    headers = {p["name"].lower() for p in receive.get("parameters", []) if p["in"] == "header"}
    if "x-partner-sign" not in headers:
        problems.append("POST /webhooks/smart-glocal documents no X-PARTNER-SIGN header")
    if "application/json" not in receive.get("requestBody", {}).get("content", {}):
        problems.append("POST /webhooks/smart-glocal documents no JSON request body")

    assert not problems, "\n".join(problems)
