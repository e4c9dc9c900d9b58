"""Every SQL statement of the service, as asyncio coroutines run by asyncpg.

This module is the asyncio side of the bridge (STYLE R14): no trio imports, every function is named
`aio_*`, takes the pool first, runs all its statements on one connection (in a transaction where it
writes) and returns frozen records. `Store` calls each through `aio_as_trio` exactly once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.store.models import Migration, User

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from uuid import UUID

    import asyncpg

# Any constant works as long as every process uses the same one; this one spells "stories" in hex-ish.
MIGRATION_LOCK_ID = 0x5701_1E5


async def aio_ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


async def aio_migrate(pool: asyncpg.Pool, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations not yet recorded, in order, each in its own transaction.

    A session-level advisory lock serializes processes that start at once: the second waits, then finds
    every migration recorded. Returns the versions this call applied.
    """
    applied: list[int] = []
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer     PRIMARY KEY,
                       name       text        NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], email=row["email"], password_hash=row["password_hash"], created_at=row["created_at"])


async def aio_create_user(
    pool: asyncpg.Pool, user_id: UUID, email: str, password_hash: str, now: datetime
) -> User | None:
    """Insert a user; None when the email is taken (the unique index decides, so races are safe)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO users (id, email, password_hash, created_at) VALUES ($1, $2, $3, $4)
               ON CONFLICT (email) DO NOTHING
               RETURNING id, email, password_hash, created_at""",
            user_id,
            email,
            password_hash,
            now,
        )
    return None if row is None else _user(row)


async def aio_user_by_email(pool: asyncpg.Pool, email: str) -> User | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT id, email, password_hash, created_at FROM users WHERE email = $1", email)
    return None if row is None else _user(row)
