"""The migration engine: finds the numbered SQL migrations (schema/NNNN_name.sql) and applies the missing ones,
under an advisory lock, recording each in schema_migrations."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from stories.store.models import Migration

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from stories.store.database import Database

__all__ = ["load_migrations", "migrate", "schema_dir"]

log = structlog.get_logger()

# Advisory lock id: any constant works as long as every process uses the same one.
MIGRATION_LOCK_ID = 0x5701_1E5

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def schema_dir() -> Path:
    """The migrations folder: inside the installed wheel (stories/_schema), else the checkout's schema/."""
    packaged = Path(str(resources.files("stories"))) / "_schema"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schema"


def load_migrations(folder: Path | None = None) -> list[Migration]:
    folder = folder or schema_dir()
    migrations = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match is None:
            continue
        migrations.append(Migration(version=int(match[1]), name=match[2], sql=path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if not migrations or len(set(versions)) != len(versions):
        raise RuntimeError(f"schema folder {folder} has no migrations or duplicate version numbers")
    return migrations


async def migrate(database: Database) -> list[int]:
    """Apply what is missing; safe when several processes start at once (advisory lock). On a direct
    connection: the lock is held across transactions, which a transaction pooler would spread over sessions."""
    applied = await database.call_direct(aio_migrate, load_migrations())
    log.info("db.migrated", applied=applied)
    return applied


async def aio_migrate(pool: asyncpg.Pool, migrations: Sequence[Migration]) -> list[int]:
    """Apply the migrations not yet recorded, in order, each in its own transaction.

    A session-level advisory lock serializes processes that start at once: the second waits, then finds
    every migration recorded. Returns the versions this call applied.
    """
    applied: list[int] = []
    async with pool.acquire() as conn:
        # A migration (an index build) and the wait for another process's may take longer than the pool's
        # statement timeout: unbounded for this session, and back to the pool's bound after.
        await conn.execute("SET statement_timeout = 0")
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
            await conn.execute("RESET statement_timeout")
    return applied
