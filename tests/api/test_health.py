"""GET /healthz: 200 with the database up; 503 with the same body shape while it is unreachable,
and back to 200 when it returns, in the same process. The outage is real: the app talks to PostgreSQL
through a TCP relay that the test stops, restarts or stalls."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest
import trio

from stories.api import create_app
from stories.redis import open_redis
from stories.store import Store, open_database
from tests.helpers import PASSWORD
from tests.proxy import Relay, open_relay, via

# Far longer than the health check's own 2 s bound: reached only by a check that hangs.
HANG_SECONDS = 30.0


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[Relay]:
    async with open_relay(database_url) as relay:
        yield relay


async def healthz(client: object) -> tuple[int, dict[str, object]]:
    response = await client.get("/healthz")  # type: ignore[attr-defined]
    return response.status_code, await response.get_json()


UP = {"status": "ok", "checks": {"db": "ok", "redis": "disabled", "storage": "disabled"}}
DOWN = {"status": "degraded", "checks": {"db": "down", "redis": "disabled", "storage": "disabled"}}


async def test_healthz_ok(client):
    assert await healthz(client) == (200, UP)


async def test_healthz_follows_the_database_down_and_back(relay, settings, app_deps):
    async with open_database(via(relay, settings.database_url), data_dir=settings.data_dir, pool_size=2) as database:
        client = create_app(dataclasses.replace(app_deps, store=Store(database))).test_client()
        with trio.fail_after(20):
            assert await healthz(client) == (200, UP)

            relay.stop()
            assert await healthz(client) == (503, DOWN)
            assert await healthz(client) == (503, DOWN)
            # Routes that need the database answer 503 with the error body, not 500.
            for path in ("/signup", "/login"):
                response = await client.post(path, json={"email": "down@example.com", "password": PASSWORD})
                assert response.status_code == 503, await response.get_data()
                assert (await response.get_json())["error"] == "database_unavailable"

            await relay.restart()
            assert await healthz(client) == (200, UP)
            response = await client.post("/signup", json={"email": "back@example.com", "password": PASSWORD})
            assert response.status_code == 201


async def test_healthz_answers_in_bounded_time_when_the_database_hangs(relay, settings, app_deps):
    # The request's own deadline (and the checks' share of it) pushed past HANG_SECONDS: only the database
    # check's bound can end the probe in time.
    settings = dataclasses.replace(settings, request_timeout_seconds=4 * HANG_SECONDS)
    async with open_database(via(relay, settings.database_url), data_dir=settings.data_dir, pool_size=2) as database:
        client = create_app(dataclasses.replace(app_deps, settings=settings, store=Store(database))).test_client()
        assert await healthz(client) == (200, UP)
        relay.stall()
        # The database hangs until the answer is in: an answer at all is one bounded by the check's own deadline
        # (measured against the clock, a loaded machine would fail it).
        try:
            with trio.fail_after(HANG_SECONDS):
                answer = await healthz(client)
        finally:
            relay.resume()
        assert answer == (503, DOWN)
        assert await healthz(client) == (200, UP)


async def test_healthz_reports_redis_ok(app_deps, redis_link):
    client = create_app(dataclasses.replace(app_deps, redis=redis_link)).test_client()
    assert await healthz(client) == (200, {**UP, "checks": {**UP["checks"], "redis": "ok"}})


async def test_healthz_is_degraded_but_serving_when_redis_is_down(app_deps, closed_redis_url):
    async with open_redis(closed_redis_url) as redis:
        client = create_app(dataclasses.replace(app_deps, redis=redis)).test_client()
        status, body = await healthz(client)
    assert status == 200
    assert body == {"status": "degraded", "checks": {"db": "ok", "redis": "down", "storage": "disabled"}}


async def test_concurrent_probes_on_a_healthy_database_all_answer_200(client):
    # They shared one health connection: 60 at once gave some 503s (another operation in progress) and 500s.
    answers: list[tuple[int, dict[str, object]]] = []

    async def probe(path: str) -> None:
        response = await client.get(path)
        answers.append((response.status_code, await response.get_json()))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for n in range(60):
                nursery.start_soon(probe, "/healthz" if n % 2 else "/readyz")
    assert len(answers) == 60
    assert all(answer[1]["checks"]["db"] == "ok" for answer in answers)  # type: ignore[index]
    assert {status for status, body in answers if "relay" not in body["checks"]} == {200}  # type: ignore[operator]
