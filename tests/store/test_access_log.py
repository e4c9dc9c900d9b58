"""The access change log's reads on a connection an interrupted statement left inside an implicit transaction.

asyncpg prepares a statement (Parse, Describe, then Flush: no Sync) before it binds it; an operation cancelled
between the two leaves the server session in an implicit transaction that has taken a snapshot, and the pool
takes the connection back as idle. Without a statement cache (behind a transaction pooler) every statement has
that window, and a client that goes away mid-request opens it: a `BEGIN ISOLATION LEVEL ...` on that connection
then fails (`SET TRANSACTION ISOLATION LEVEL must be called before any query`). Found through PgBouncer by
bench/pooler.md's run (the access actor crashed).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from stories.store import open_database
from stories.store.sessions import AccessLog

if TYPE_CHECKING:
    from pathlib import Path

    import asyncpg


async def aio_prepare_only(pool: asyncpg.Pool) -> None:
    """What an operation cancelled between asyncpg's prepare and its bind leaves behind."""
    async with pool.acquire() as conn:
        await conn.prepare("SELECT count(*) FROM sessions WHERE revoked_at > $1")


async def test_the_change_log_reads_on_a_connection_left_in_an_implicit_transaction(
    database_url: str, tmp_path: Path
) -> None:
    async with open_database(database_url, data_dir=tmp_path, pool_size=1) as database:
        log = AccessLog(database)
        await database.call(aio_prepare_only)
        horizon, revoked = await log.start(datetime(2026, 1, 1, tzinfo=UTC))
        assert revoked == []
        await database.call(aio_prepare_only)
        changes = await log.read(horizon)
        assert changes.horizon >= horizon
