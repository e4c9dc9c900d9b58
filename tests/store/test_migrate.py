"""Migrations on an empty database: concurrent migrators both succeed, each version is recorded once,
and a second run applies nothing."""

from __future__ import annotations

from pathlib import Path

import trio

from stories.store import migrate, open_database
from stories.store.migrate import load_migrations
from tests.sql import fetch

MIGRATORS = 3


async def test_concurrent_migrators_on_an_empty_database(fresh_database, tmp_path: Path):
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions)
    applied: list[list[int]] = []

    async def migrator() -> None:
        # Each migrator has its own pool, as two processes starting at once would.
        async with open_database(fresh_database, data_dir=tmp_path, pool_size=1) as store:
            applied.append(await migrate(store))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(MIGRATORS):
                nursery.start_soon(migrator)

    # Exactly one migrator applied everything; the others waited on the lock and found it done.
    assert sorted(applied, key=len) == [[]] * (MIGRATORS - 1) + [versions]
    rows = await fetch(fresh_database, "SELECT version, count(*) AS n FROM schema_migrations GROUP BY version")
    assert sorted((row["version"], row["n"]) for row in rows) == [(v, 1) for v in versions]

    # The complete data model is there.
    tables = {
        r["tablename"] for r in await fetch(fresh_database, "SELECT tablename FROM pg_tables WHERE schemaname='public'")
    }
    assert tables >= {
        "schema_migrations",
        "users",
        "follows",
        "stories",
        "story_audience",
        "story_views",
        "reactions",
        "idempotency_keys",
    }

    async with open_database(fresh_database, data_dir=tmp_path, pool_size=1) as store:
        assert await migrate(store) == []
    rows = await fetch(fresh_database, "SELECT count(*) AS n FROM schema_migrations")
    assert rows[0]["n"] == len(versions)
    # The advisory lock was released: nobody holds it now.
    locks = await fetch(fresh_database, "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'")
    assert locks[0]["n"] == 0


async def test_migrating_a_migrated_database_applies_nothing(database_url, tmp_path: Path):
    async with open_database(database_url, data_dir=tmp_path, pool_size=1) as store:
        assert await migrate(store) == []


async def test_migrations_run_on_the_direct_url(database_url, fresh_database, tmp_path: Path):
    """Behind a transaction pooler the migrations' session lock needs a session: DATABASE_DIRECT_URL's. Here the
    pool's URL names the session's migrated database and the direct one an empty one: the migrations land there."""
    async with open_database(database_url, data_dir=tmp_path, pool_size=1, direct_url=fresh_database) as store:
        assert await migrate(store) == [migration.version for migration in load_migrations()]
