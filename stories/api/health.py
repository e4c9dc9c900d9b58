"""GET /healthz (is it serving?) and GET /metrics (Prometheus text)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Response

from stories.api.bodies import json_response
from stories.api.deps import deps
from stories.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["blueprint"]

blueprint = Blueprint("health", __name__)

# A health probe must answer quickly even when the database hangs.
DB_CHECK_SECONDS = 2.0
REDIS_CHECK_SECONDS = 1.0
# The checks run together and take at most this share of REQUEST_TIMEOUT_SECONDS.
HEALTH_SHARE_OF_REQUEST = 0.8


async def _database_check() -> str:
    try:
        await deps().store.ping()
    except StoreUnavailable:
        return "down"
    return "ok"


async def _redis_check() -> str:
    redis = deps().redis
    if redis is None:
        return "disabled"
    return await redis.check()


async def _run_checks() -> dict[str, str]:
    """Every check at once, each bounded so that the answer comes well within the request's own deadline
    (REQUEST_TIMEOUT_SECONDS): a hung dependency reads as "down", never as a timed-out probe."""
    budget = HEALTH_SHARE_OF_REQUEST * deps().settings.request_timeout_seconds
    media = deps().media
    # Storage is probed by its own actor every few seconds (stories/media/link.py): here, only read.
    checks = {"db": "down", "redis": "down", "storage": "disabled" if media is None else media.status}

    async def check(name: str, probe: Callable[[], Awaitable[str]], seconds: float) -> None:
        with trio.move_on_after(min(seconds, budget)):
            checks[name] = await probe()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check, "db", _database_check, DB_CHECK_SECONDS)
        nursery.start_soon(check, "redis", _redis_check, REDIS_CHECK_SECONDS)
    return checks


@blueprint.get("/healthz")
async def healthz() -> Response:
    checks = await _run_checks()
    # Redis or storage down is degraded, not down: rate limits, caches and events fall back to this process, and
    # everything but uploads works without storage.
    degraded = any(value == "down" for value in checks.values())
    body = {"status": "degraded" if degraded else "ok", "checks": checks}
    return json_response(body, 503 if checks["db"] == "down" else 200)


@blueprint.get("/metrics")
async def metrics() -> Response:
    return Response(deps().metrics.render(), 200, content_type=CONTENT_TYPE_LATEST)
