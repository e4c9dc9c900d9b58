"""GET /healthz: 200 with the database up; 503 with the same body shape while it is unreachable,
and back to 200 when it returns, in the same process. The outage is real: the app talks to PostgreSQL
through a TCP relay that the test stops, restarts or stalls."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import trio

from stories.api import create_app
from stories.redis import open_redis
from stories.store import Store, open_database
from tests.helpers import PASSWORD

RELAY_CHUNK = 65_536
# Longer than the health check's own 2 s bound.
HUNG_DATABASE_SECONDS = 4.0


class Relay:
    """Forwards TCP connections from a local port to PostgreSQL. `stop()` closes the port and every
    relayed connection (the database is gone); `stall()` keeps accepting but forwards nothing (it hangs)."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        # The embedded server listens on a unix socket (?host=<dir>); the machine's on TCP.
        self.unix_path = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir.startswith("/") else None
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = 0
        self.flowing = trio.Event()
        self.flowing.set()
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Listen (on the same port again after a stop) and relay until stopped."""
        self._nursery = nursery
        self._scope = trio.CancelScope()
        self.port = await nursery.start(self._serve, self._scope)

    async def restart(self) -> None:
        assert self._nursery is not None
        await self.start(self._nursery)

    def stop(self) -> None:
        self._scope.cancel("database outage")

    def stall(self) -> None:
        self.flowing = trio.Event()

    def resume(self) -> None:
        self.flowing.set()

    async def _serve(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int]) -> None:
        with scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            async with trio.open_nursery() as connections:
                task_status.started(listeners[0].socket.getsockname()[1])
                await trio.serve_listeners(self._relay, listeners, handler_nursery=connections)

    async def _relay(self, client: trio.SocketStream) -> None:
        if self.unix_path is not None:
            upstream: trio.abc.Stream = await trio.open_unix_socket(self.unix_path)
        else:
            upstream = await trio.open_tcp_stream(*self.target)
        async with client, upstream, trio.open_nursery() as pumps:
            pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope)
            pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope)

    async def _pump(self, source: trio.abc.Stream, sink: trio.abc.Stream, both: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(RELAY_CHUNK):
                await self.flowing.wait()
                await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        # One side hung up: end the relayed connection both ways.
        both.cancel("peer closed")


@pytest.fixture
async def relay(database_url: str) -> AsyncIterator[Relay]:
    relay = Relay(database_url)
    async with trio.open_nursery() as nursery:
        await relay.start(nursery)
        yield relay
        nursery.cancel_scope.cancel("test over")


def via(relay: Relay, database_url: str) -> str:
    """The same database, reached through the relay's TCP port."""
    parts = urlsplit(database_url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{relay.port}", query=query))


async def healthz(client: object) -> tuple[int, dict[str, object]]:
    response = await client.get("/healthz")  # type: ignore[attr-defined]
    return response.status_code, await response.get_json()


UP = {"status": "ok", "checks": {"db": "ok", "redis": "disabled", "storage": "disabled"}}
DOWN = {"status": "degraded", "checks": {"db": "down", "redis": "disabled", "storage": "disabled"}}


async def test_healthz_ok(client):
    assert await healthz(client) == (200, UP)


async def test_healthz_follows_the_database_down_and_back(aio_loop, relay, settings, app_deps):
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


async def test_healthz_answers_in_bounded_time_when_the_database_hangs(aio_loop, relay, settings, app_deps):
    async with open_database(via(relay, settings.database_url), data_dir=settings.data_dir, pool_size=2) as database:
        client = create_app(dataclasses.replace(app_deps, store=Store(database))).test_client()
        assert await healthz(client) == (200, UP)
        relay.stall()

        async def end_the_stall_later() -> None:
            # Without this, a hung probe would hang the test too; with the bug it ends the probe at 4 s.
            await trio.sleep(HUNG_DATABASE_SECONDS)
            relay.resume()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end_the_stall_later)
            started = trio.current_time()
            answer = await healthz(client)
            elapsed = trio.current_time() - started
        assert elapsed < HUNG_DATABASE_SECONDS - 1, elapsed
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
