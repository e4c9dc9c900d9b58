"""Behind a real PgBouncer in transaction pooling mode (docs/operations.md, "Behind PgBouncer").

Always run where `pgbouncer` is installed (CI installs it), whatever TEST_PGBOUNCER says: `stories serve` with
DATABASE_URL through the pooler and DATABASE_DIRECT_URL around it migrates an empty database, signs up, posts,
serves a feed and delivers a view's realtime event; and the pool's statements survive a pooler that hands
each transaction to whichever server session is free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import trio

from bench.pgbouncer import pgbouncer_binary, running_pgbouncer
from stories.store import open_database
from stories.store.migrate import MIGRATION_LOCK_ID, load_migrations
from tests.processes import open_socket, signup, stories_serve, wait_for_connections
from tests.sql import sql_connection

if TYPE_CHECKING:
    from pathlib import Path

    import asyncpg

    from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.skipif(
    pgbouncer_binary() is None, reason="pgbouncer is not installed (Debian: apt-get install pgbouncer)"
)

WAIT = 30.0
# Fewer server sessions than the app's pool has connections: consecutive transactions of one pool connection
# land on different sessions, as they do under load in production.
SERVER_SESSIONS = 2
CONCURRENT_CALLS = 40


async def test_stories_serve_behind_pgbouncer_migrates_serves_and_delivers_events(
    postgres_server: PostgresServer, fresh_database: str, tmp_path: Path
) -> None:
    with running_pgbouncer(postgres_server.admin_url, pool_size=SERVER_SESSIONS) as bouncer:
        pooled = bouncer.url_for(fresh_database)
        async with (
            stories_serve(pooled, tmp_path, DATABASE_DIRECT_URL=fresh_database, DB_POOL_SIZE="6") as server,
            httpx.AsyncClient(timeout=WAIT) as http,
        ):
            url = server.base_url
            with trio.fail_after(WAIT):
                author, viewer = await signup(http, url, "author"), await signup(http, url, "viewer")
                followed = await http.post(f"{url}/follow/{author.user_id}", headers=viewer.auth)
                assert followed.status_code == 200, followed.text
                created = await http.post(
                    f"{url}/stories", json={"text": "through the pooler", "visibility": "public"}, headers=author.auth
                )
                assert created.status_code == 201, created.text
                story_id = created.json()["id"]
                feed = await http.get(f"{url}/feed", headers=viewer.auth)
                assert feed.status_code == 200, feed.text
                assert [story["id"] for story in feed.json()["stories"]] == [story_id]
                async with open_socket(server, author.token) as socket:
                    await wait_for_connections(http, url, 1)
                    view = await http.post(f"{url}/stories/{story_id}/view", headers=viewer.auth)
                    assert view.status_code == 200, view.text
                    event = orjson.loads(await socket.get_message())
                assert event["type"] == "story.viewed"
                assert event["payload"]["story_id"] == story_id
                assert (await http.get(f"{url}/readyz")).status_code == 200
                # While the service and its pooler run, no session holds the migrations' lock: a lock taken and
                # released through a transaction pooler may land on two sessions, and stay held on the first.
                async with sql_connection(fresh_database) as sql:
                    versions = [row["version"] for row in await sql.fetch("SELECT version FROM schema_migrations")]
                    held = await sql.fetchval(
                        """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $1
                             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
                        MIGRATION_LOCK_ID,
                    )
                assert held == 0
            assert not server.logged("actor.crashed"), server.describe()
        # The app's pool went through the pooler; the migration (a session's advisory lock) did not need it.
        assert bouncer.logins(urlsplit(fresh_database).path.lstrip("/")) > 0
    assert sorted(versions) == [migration.version for migration in load_migrations()]


async def _parameterized(pool: asyncpg.Pool, n: int) -> int:
    """Two transactions on one pool connection: the second may run on another server session."""
    async with pool.acquire() as conn:
        first: int = await conn.fetchval("SELECT $1::int + 1", n)
        second: int = await conn.fetchval("SELECT $1::int * 2", first)
    return second


async def _session_name(pool: asyncpg.Pool) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT current_setting('application_name')")


async def test_the_pool_prepares_nothing_a_pooler_would_lose_and_session_work_goes_direct(
    postgres_server: PostgresServer, database_url: str, tmp_path: Path
) -> None:
    with running_pgbouncer(postgres_server.admin_url, pool_size=SERVER_SESSIONS) as bouncer:
        pooled = f"{bouncer.url_for(database_url)}?application_name=via-pooler"
        direct = f"{database_url}?application_name=direct"
        async with open_database(pooled, data_dir=tmp_path, pool_size=8, direct_url=direct) as database:
            results: list[int] = []

            async def one(n: int) -> None:
                results.append(await database.call(_parameterized, n))

            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:
                    for n in range(CONCURRENT_CALLS):
                        nursery.start_soon(one, n)
                assert sorted(results) == [(n + 1) * 2 for n in range(CONCURRENT_CALLS)]
                assert await database.call(_session_name) == "via-pooler"
                assert await database.call_direct(_session_name) == "direct"
                assert database.direct_dsn == direct
                await database.ping()
