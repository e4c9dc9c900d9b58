"""GET /healthz (is it serving?) and GET /metrics (Prometheus text)."""

from __future__ import annotations

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response

from stories.api.bodies import json_response
from stories.api.deps import deps
from stories.errors import StoreUnavailable

__all__ = ["blueprint"]

blueprint = Blueprint("health", __name__)

# A health probe must answer quickly even when the database hangs.
DB_CHECK_SECONDS = 2.0
REDIS_CHECK_SECONDS = 1.0


async def _database_check() -> str:
    with trio.move_on_after(DB_CHECK_SECONDS):
        try:
            await deps().store.ping()
        except StoreUnavailable:
            return "down"
        return "ok"
    return "down"


async def _redis_check() -> str:
    redis = deps().redis
    if redis is None:
        return "disabled"
    with trio.move_on_after(REDIS_CHECK_SECONDS):
        return await redis.check()
    return "down"


@blueprint.get("/healthz")
async def healthz() -> Response:
    checks = {"db": await _database_check(), "redis": await _redis_check(), "storage": "disabled"}
    # Redis down is degraded, not down: rate limits, caches and events fall back to this process.
    degraded = any(value == "down" for value in checks.values())
    body = {"status": "degraded" if degraded else "ok", "checks": checks}
    return json_response(body, 503 if checks["db"] == "down" else 200)


@blueprint.get("/metrics")
async def metrics() -> Response:
    return Response(deps().metrics.render(), 200, content_type=CONTENT_TYPE_LATEST)
