"""GET /healthz (is it alive?), GET /readyz (should it get traffic?) and GET /metrics (Prometheus text).

Served by the API and by `stories worker` alike: they read `probes()`, never the API's own collaborators.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio
from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.json_io import json_response
from stories.api.openapi import json_answer, ref
from stories.api.probe_deps import Probes, probes
from stories.errors import StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["blueprint"]

blueprint = DeclaredBlueprint("health", __name__)

# A health probe must answer quickly even when the database hangs.
DB_CHECK_SECONDS = 2.0
REDIS_CHECK_SECONDS = 1.0
# The checks run together and take at most this share of REQUEST_TIMEOUT_SECONDS.
HEALTH_SHARE_OF_REQUEST = 0.8


async def _database_check(checked: Probes) -> str:
    try:
        await checked.store.ping()
    except StoreUnavailable:
        return "down"
    return "ok"


async def _redis_check(checked: Probes) -> str:
    if checked.redis is None:
        return "disabled"
    return await checked.redis.check()


async def _run_checks(checked: Probes) -> dict[str, str]:
    """Every check at once, each bounded so that the answer comes well within the request's own deadline
    (REQUEST_TIMEOUT_SECONDS): a hung dependency reads as "down", never as a timed-out probe."""
    budget = HEALTH_SHARE_OF_REQUEST * checked.settings.request_timeout_seconds
    # Storage is probed by its own actor every few seconds (stories/media/link.py): here, only read.
    storage = "disabled" if checked.media is None else checked.media.status
    checks: dict[str, str] = {"db": "down", "redis": "down", "storage": storage}

    async def check(name: str, probe: Callable[[Probes], Awaitable[str]], seconds: float) -> None:
        with trio.move_on_after(min(seconds, budget)):
            checks[name] = await probe(checked)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(check, "db", _database_check, DB_CHECK_SECONDS)
        nursery.start_soon(check, "redis", _redis_check, REDIS_CHECK_SECONDS)
    return checks


def _status(checks: dict[str, str]) -> str:
    # Redis or storage down is degraded, not down: rate limits, caches and events fall back to this process, and
    # everything but uploads works without storage.
    return "degraded" if any(value == "down" for value in checks.values()) else "ok"


def _relay_state(checked: Probes) -> str:
    if checked.relay is None:
        return "disabled"
    return "ok" if checked.relay.listening else "down"


HEALTHZ = Route(
    "GET",
    "/healthz",
    "healthz",
    "operations",
    "Health of the process and its dependencies (liveness)",
    {
        "200": json_answer(
            ref("Health"),
            "serving",
            {"status": "ok", "checks": {"db": "ok", "redis": "ok", "storage": "ok"}},
        ),
        "503": json_answer(
            ref("Health"),
            "the database is down (the process keeps running and recovers when it returns)",
            {"status": "degraded", "checks": {"db": "down", "redis": "ok", "storage": "ok"}},
        ),
    },
    public=True,
    table_answer="`200` or `503` health",
)


@blueprint.declare(HEALTHZ)
async def healthz() -> Response:
    checks = await _run_checks(probes())
    return json_response({"status": _status(checks), "checks": checks}, 503 if checks["db"] == "down" else 200)


READYZ = Route(
    "GET",
    "/readyz",
    "readyz",
    "operations",
    "Readiness: 200 only while this process should get traffic",
    {
        "200": json_answer(
            ref("Readiness"),
            "ready",
            {
                "status": "ok",
                "checks": {"db": "ok", "redis": "ok", "storage": "ok", "relay": "ok", "process": "serving"},
            },
        ),
        "503": json_answer(
            ref("Readiness"),
            "not ready: starting, draining, the database down or the event relay not subscribed",
            {
                "status": "ok",
                "checks": {
                    "db": "ok",
                    "redis": "disabled",
                    "storage": "disabled",
                    "relay": "ok",
                    "process": "draining",
                },
            },
        ),
    },
    public=True,
    table_answer="`200` or `503` readiness",
)


@blueprint.declare(READYZ)
async def readyz() -> Response:
    """200 only while this process should get traffic: started (migrations applied, actors running), not
    draining, the database answering, and the event relay subscribed.

    One exception keeps graceful degradation: with Redis configured and down, every process's relay is down
    at once, and taking them all out of the load balancer would turn a degraded service into no service. So
    the relay counts only while its broker answers (it always does for the PostgreSQL relay: the database).
    """
    checked = probes()
    checks = await _run_checks(checked)
    checks["relay"] = _relay_state(checked)
    checks["process"] = checked.life.phase
    relay_ok = checks["relay"] != "down" or checks["redis"] == "down"
    ready = checks["process"] == "serving" and checks["db"] == "ok" and relay_ok
    return json_response({"status": _status(checks), "checks": checks}, 200 if ready else 503)


METRICS = Route(
    "GET",
    "/metrics",
    "metrics",
    "operations",
    "Prometheus metrics (docs/operations.md lists them)",
    {
        "200": {
            "description": "Prometheus text format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
    public=True,
    table_answer="`200` Prometheus text",
)


@blueprint.declare(METRICS)
async def metrics() -> Response:
    return Response(probes().metrics.render(), 200, content_type=CONTENT_TYPE_LATEST)
