"""Operators' endpoints: liveness, readiness and metrics."""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response
from quart_schema import hide

from .bridge import bridge

log = logging.getLogger(__name__)
bp = Blueprint("ops", __name__)


@bp.get("/healthz")
@hide
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@bp.get("/readyz")
@hide
async def readyz() -> tuple[dict[str, str], int]:
    try:
        await bridge().store.ping()
    except Exception:
        log.exception("storage is not reachable")
        return {"status": "unavailable"}, 503
    return {"status": "ready"}, 200


@bp.get("/metrics")
@hide
async def metrics() -> Response:
    return Response(bridge().metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
