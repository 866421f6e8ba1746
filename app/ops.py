"""Operators' endpoints: liveness, readiness and metrics."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response, current_app, request
from quart_schema import hide

from . import assets
from .current import bridge

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@hide
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
@hide
async def readyz() -> tuple[dict[str, str], int]:
    """Ready when the storage answers and the pages can be rendered."""
    try:
        assets.check(Path(current_app.template_folder or ""), Path(current_app.static_folder or ""))
    except assets.MissingAssetsError as error:
        log.error("not ready: %s", error)
        return {"status": "unavailable"}, 503
    try:
        await bridge().ping()
    except Exception:
        log.exception("storage is not reachable")
        return {"status": "unavailable"}, 503
    return {"status": "ready"}, 200


@bp.get("/metrics")
@hide
async def metrics() -> Response:
    """Prometheus text; with ``BRIDGE_METRICS_TOKEN`` only for ``Authorization: Bearer`` it."""
    expected = bridge().settings.metrics_token
    if expected is not None:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return Response("a metrics token is required\n", 401, {"WWW-Authenticate": "Bearer"})
    return Response(bridge().exposition(), content_type=CONTENT_TYPE_LATEST)
