"""Leader-only housekeeping: expire stories, recount counters, purge what retention no longer keeps.

Each batch takes the expiry lock (locks.py) inside its transaction, so a crashed leader frees it with its
connection and any number of processes may run the ticker: one does the work at a time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from stories.store.locks import EXPIRY_LOCK_ID

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg


async def aio_expire_batch(pool: asyncpg.Pool, now: datetime, limit: int) -> int | None:
    """Soft-delete up to `limit` expired stories, each as of its expiry (`deleted_at` = `expires_at`): retention
    counts from when a story expired (API.md "Retention"), however late a worker gets to it. None when another
    process holds the expiry lock.

    The lock is transaction-scoped, so a crashed leader frees it with its connection, and many processes
    may run the ticker safely: one of them does the work at a time.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EXPIRY_LOCK_ID):
            return None
        # A primary-key lookup of the locked ids: as a join, the planner picked a hash join that scanned the
        # whole table (100,500 rows, 75 ms on 100k stories; 1,000 rows, 26 ms this way: bench/feed_plans.md).
        status = await conn.execute(
            """UPDATE stories SET deleted_at = expires_at
               WHERE id = ANY (ARRAY(SELECT id FROM stories WHERE deleted_at IS NULL AND expires_at <= $1
                                     ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))""",
            now,
            limit,
        )
    return int(status.rsplit(" ", 1)[1])


async def aio_recount_since(
    pool: asyncpg.Pool, since: datetime, now: datetime | None = None, overlap_seconds: float = 0.0
) -> int | None:
    """Recount the stories that got views or reactions after `since` (leader-only; None when not the leader):
    the net under the counter flusher, for increments a crashed process never flushed.

    With `now`, the recount also reaches back to where the last one got (counter_recount, less
    `overlap_seconds` for the clocks of the processes that stamped the rows), and records `now` as where this
    one got: counters converge after any outage, however long, and a steady run covers one interval."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EXPIRY_LOCK_ID):
            return None
        if now is not None:
            last = await conn.fetchval("SELECT recounted_until FROM counter_recount")
            if last is not None:
                since = min(since, last - timedelta(seconds=overlap_seconds))
        status = await conn.execute(
            """UPDATE stories s
               SET view_count = (SELECT count(*) FROM story_views v WHERE v.story_id = s.id),
                   reaction_count = (SELECT count(*) FROM reactions r WHERE r.story_id = s.id)
               WHERE s.id IN (SELECT story_id FROM story_views WHERE viewed_at > $1
                              UNION SELECT story_id FROM reactions WHERE created_at > $1)""",
            since,
        )
        if now is not None:
            await conn.execute(
                """INSERT INTO counter_recount (recounted_until) VALUES ($1)
                   ON CONFLICT (singleton) DO UPDATE SET recounted_until = EXCLUDED.recounted_until""",
                now,
            )
    return int(status.rsplit(" ", 1)[1])


async def aio_purge_stories(pool: asyncpg.Pool, before: datetime, limit: int) -> int | None:
    """Delete for good up to `limit` stories soft-deleted before `before`, with their audience, views and
    reactions (foreign keys cascade). Leader-only; None when another process holds the expiry lock."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EXPIRY_LOCK_ID):
            return None
        status = await conn.execute(
            """DELETE FROM stories
               WHERE id = ANY (ARRAY(SELECT id FROM stories WHERE deleted_at < $1
                                     ORDER BY deleted_at LIMIT $2 FOR UPDATE SKIP LOCKED))""",
            before,
            limit,
        )
    return int(status.rsplit(" ", 1)[1])


async def aio_purge_idempotency_keys(pool: asyncpg.Pool, before: datetime, limit: int) -> int | None:
    """Delete up to `limit` idempotency keys claimed before `before`. Leader-only, like the rest."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EXPIRY_LOCK_ID):
            return None
        status = await conn.execute(
            """DELETE FROM idempotency_keys k
               USING (SELECT user_id, key FROM idempotency_keys WHERE created_at < $1
                      ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED) old
               WHERE k.user_id = old.user_id AND k.key = old.key""",
            before,
            limit,
        )
    return int(status.rsplit(" ", 1)[1])
