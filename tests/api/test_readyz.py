"""GET /readyz: 200 only while the process should get traffic (started, not draining, database up, relay
subscribed); the same body shape as /healthz with the relay and the process phase added."""

from __future__ import annotations

import dataclasses

import trio

from stories.actors.hub import Hub
from stories.actors.relay import build_relay
from stories.api import create_app
from stories.process_phase import Lifecycle
from stories.redis import open_redis
from stories.store import Store, open_database
from tests.proxy import open_relay, via

WAIT = 20


async def readyz(client: object) -> tuple[int, dict[str, object]]:
    response = await client.get("/readyz")  # type: ignore[attr-defined]
    return response.status_code, await response.get_json()


def checks(**changes: str) -> dict[str, str]:
    return {"db": "ok", "redis": "disabled", "storage": "disabled", "relay": "ok", "process": "serving", **changes}


async def test_readyz_follows_the_process_from_start_to_drain(app_deps):
    life = Lifecycle()
    client = create_app(dataclasses.replace(app_deps, life=life)).test_client()
    async with trio.open_nursery() as nursery:
        assert await readyz(client) == (503, {"status": "degraded", "checks": checks(process="starting", relay="down")})
        nursery.start_soon(app_deps.relay.run)
        with trio.fail_after(WAIT):
            await app_deps.relay.wait_listening()
        assert await readyz(client) == (503, {"status": "ok", "checks": checks(process="starting")})
        life.started = True
        assert await readyz(client) == (200, {"status": "ok", "checks": checks()})
        # Liveness is another question: /healthz has neither the relay nor the phase.
        assert (await client.get("/healthz")).status_code == 200
        life.shutdown.set()
        assert await readyz(client) == (503, {"status": "ok", "checks": checks(process="draining")})
        nursery.cancel_scope.cancel("test done")


async def test_readyz_is_503_while_the_database_is_down(settings, app_deps):
    async with (
        open_relay(settings.database_url) as proxy,
        open_database(via(proxy, settings.database_url), data_dir=settings.data_dir, pool_size=2) as database,
    ):
        client = create_app(dataclasses.replace(app_deps, store=Store(database), life=Lifecycle(started=True)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app_deps.relay.run)
            with trio.fail_after(WAIT):
                await app_deps.relay.wait_listening()
                assert (await readyz(client.test_client()))[0] == 200
                proxy.stop()
                assert await readyz(client.test_client()) == (
                    503,
                    {"status": "degraded", "checks": checks(db="down")},
                )
                await proxy.restart()
                assert (await readyz(client.test_client()))[0] == 200
            nursery.cancel_scope.cancel("test done")


async def test_readyz_waits_for_the_redis_relay(app_deps, redis_link):
    relay = build_relay(Hub(app_deps.metrics), database=app_deps.store.database, redis=redis_link)
    deps = dataclasses.replace(app_deps, redis=redis_link, relay=relay, life=Lifecycle(started=True))
    client = create_app(deps).test_client()
    redis_up = checks(redis="ok")
    assert await readyz(client) == (503, {"status": "degraded", "checks": {**redis_up, "relay": "down"}})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        with trio.fail_after(WAIT):
            await relay.wait_listening()
        assert await readyz(client) == (200, {"status": "ok", "checks": redis_up})
        nursery.cancel_scope.cancel("test done")


async def test_readyz_stays_ready_when_redis_is_down_for_everyone(app_deps, closed_redis_url):
    """Every process's relay is down with Redis: readiness does not take them all out of the load balancer."""
    async with open_redis(closed_redis_url) as redis:
        assert redis is not None
        relay = build_relay(Hub(app_deps.metrics), database=app_deps.store.database, redis=redis)
        deps = dataclasses.replace(app_deps, redis=redis, relay=relay, life=Lifecycle(started=True))
        answer = await readyz(create_app(deps).test_client())
    assert answer == (200, {"status": "degraded", "checks": checks(redis="down", relay="down")})
