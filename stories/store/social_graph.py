"""The social graph: follows, follow lists, blocks and mutes (API.md "Social graph").

Every list is keyset-paged newest first on an index that matches its order (schema/0009_social.sql), so a page
costs the same at the top of a list of ten entries as deep in one of a million. The follow lists answer None for
"not found" (an unknown user, one who blocked the reader) and a list otherwise: each is one statement that reads
the subject and its page together (`FROM subject LEFT JOIN LATERAL page`), so an empty page and a missing
subject are told apart without a second round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.store.foreign_keys import caller_exists
from stories.store.keyset import fetch_page
from stories.store.locks import pair_lock
from stories.store.models import Block, Follow, ListedUser, Mute
from stories.store.visibility import blocked_by, not_blocked_between, users_hidden_from

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    import asyncpg

    from stories.store.models import Position


def _add_edge_sql(table: str, owner: str, other: str, *, target: str = "", also: str = "") -> str:
    """Add the edge ($1 -> $2, at $3) of `table` when user $2 exists and `target` holds of them (idempotent): the
    new edge's time (`added`), the standing one's (`existing`), and whether the target exists. `also`: more CTEs
    run in the same statement."""
    return f"""WITH target AS (SELECT u.id FROM users u WHERE u.id = $2 {target}),
                    added AS (INSERT INTO {table} ({owner}, {other}, created_at)
                              SELECT $1, id, $3 FROM target
                              ON CONFLICT ({owner}, {other}) DO NOTHING
                              RETURNING created_at){also}
               SELECT (SELECT created_at FROM added) AS added,
                      (SELECT created_at FROM {table} WHERE {owner} = $1 AND {other} = $2) AS existing,
                      EXISTS (SELECT 1 FROM target) AS target_exists"""


# A follow needs no block between the two, either way; a block removes the follows between them, both ways.
FOLLOW_SQL = _add_edge_sql("follows", "follower_id", "followee_id", target=f"AND {not_blocked_between('$1', '$2')}")
BLOCK_SQL = _add_edge_sql(
    "blocks",
    "blocker_id",
    "blocked_id",
    also=""",
                    unfollowed AS (DELETE FROM follows
                                   WHERE (follower_id = $1 AND followee_id = $2)
                                      OR (follower_id = $2 AND followee_id = $1))""",
)
MUTE_SQL = _add_edge_sql("mutes", "muter_id", "muted_id")


async def _add_locked_edge(pool: asyncpg.Pool, sql: str, a: UUID, b: UUID, now: datetime) -> datetime | None:
    """Run an `_add_edge_sql` statement under the pair's lock: the edge's time, None when the target is not
    there (or not allowed)."""
    async with pool.acquire() as conn, caller_exists(), conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", pair_lock(a, b))
        row = await conn.fetchrow(sql, a, b, now)
    if row is None or not row["target_exists"]:
        return None
    created_at: datetime = row["added"] or row["existing"]
    return created_at


async def aio_follow(pool: asyncpg.Pool, follower_id: UUID, followee_id: UUID, now: datetime) -> Follow | None:
    """Follow (idempotent: the original follow is returned). None when the followee does not exist or a block
    stands between the two, either way (API.md: as for an unknown user).

    Under the pair's lock (see `pair_lock`), so a concurrent block either removes this follow or is seen by
    it; the statement after the lock reads with a snapshot taken after any block that held it committed, and
    after any concurrent follow of the same pair, so the original follow is always found.
    """
    created_at = await _add_locked_edge(pool, FOLLOW_SQL, follower_id, followee_id, now)
    return None if created_at is None else Follow(follower_id, followee_id, created_at)


async def aio_unfollow(pool: asyncpg.Pool, follower_id: UUID, followee_id: UUID) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2", follower_id, followee_id)


def _listed(rows: list[asyncpg.Record]) -> list[ListedUser] | None:
    """The rows of a `subject LEFT JOIN LATERAL page` statement: none = no subject; one of NULLs = empty page."""
    if not rows:
        return None
    return [ListedUser(row["user_id"], row["display_name"], row["at"]) for row in rows if row["user_id"] is not None]


def _follow_list_sql(listed: str, subject: str, *, with_cursor: bool) -> str:
    """Followers ($1's followers: listed = follower_id, subject = followee_id) or following (the reverse), as
    reader $2 sees them, $3 at most, after position ($4, $5). Walks follows_followers_idx / follows_following_idx
    from the position down: an index range scan that stops after the page."""
    after = f"AND (f.created_at, f.{listed}) < ($4, $5)" if with_cursor else ""
    return f"""
        SELECT p.user_id, p.display_name, p.at
        FROM users t
        LEFT JOIN LATERAL (
            SELECT f.{listed} AS user_id, f.created_at AS at,
                   (SELECT u.display_name FROM users u WHERE u.id = f.{listed}) AS display_name
            FROM follows f
            WHERE f.{subject} = t.id {after} AND f.{listed} NOT IN {users_hidden_from("$2")}
            ORDER BY f.created_at DESC, f.{listed} DESC
            LIMIT $3) p ON true
        WHERE t.id = $1 AND NOT {blocked_by("$1", "$2")}
        ORDER BY p.at DESC, p.user_id DESC"""


FOLLOWERS_SQL = _follow_list_sql("follower_id", "followee_id", with_cursor=False)
FOLLOWERS_AFTER_SQL = _follow_list_sql("follower_id", "followee_id", with_cursor=True)
FOLLOWING_SQL = _follow_list_sql("followee_id", "follower_id", with_cursor=False)
FOLLOWING_AFTER_SQL = _follow_list_sql("followee_id", "follower_id", with_cursor=True)


async def aio_followers(
    pool: asyncpg.Pool, reader_id: UUID, user_id: UUID, limit: int, cursor: Position | None
) -> list[ListedUser] | None:
    """Who follows `user_id`, newest follow first; None when unknown or when they have blocked the reader."""
    rows = await fetch_page(pool, FOLLOWERS_SQL, FOLLOWERS_AFTER_SQL, (user_id, reader_id, limit), cursor)
    return _listed(rows)


async def aio_following(
    pool: asyncpg.Pool, reader_id: UUID, user_id: UUID, limit: int, cursor: Position | None
) -> list[ListedUser] | None:
    """Whom `user_id` follows, newest follow first; None when unknown or when they have blocked the reader."""
    rows = await fetch_page(pool, FOLLOWING_SQL, FOLLOWING_AFTER_SQL, (user_id, reader_id, limit), cursor)
    return _listed(rows)


async def aio_block(pool: asyncpg.Pool, blocker_id: UUID, blocked_id: UUID, now: datetime) -> Block | None:
    """Block (idempotent: the original block is returned) and remove the follows between the two, both ways, in
    the same transaction. None when the user does not exist. Under the pair's lock, as follows are."""
    created_at = await _add_locked_edge(pool, BLOCK_SQL, blocker_id, blocked_id, now)
    return None if created_at is None else Block(blocker_id, blocked_id, created_at)


async def aio_unblock(pool: asyncpg.Pool, blocker_id: UUID, blocked_id: UUID) -> None:
    """Unblock (idempotent). The follows the block removed stay removed."""
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", blocker_id, blocked_id)


async def aio_mute(pool: asyncpg.Pool, muter_id: UUID, muted_id: UUID, now: datetime) -> Mute | None:
    """Mute (idempotent: the original mute is returned). None when the user does not exist."""
    async with pool.acquire() as conn, caller_exists():
        row = await conn.fetchrow(
            MUTE_SQL,
            muter_id,
            muted_id,
            now,
        )
        if row is None or not row["target_exists"]:
            return None
        created_at = row["added"] or row["existing"]
        if created_at is None:
            # A concurrent mute committed after this statement's snapshot: read it now.
            created_at = await conn.fetchval(
                "SELECT created_at FROM mutes WHERE muter_id = $1 AND muted_id = $2", muter_id, muted_id
            )
    return Mute(muter_id, muted_id, created_at)


async def aio_unmute(pool: asyncpg.Pool, muter_id: UUID, muted_id: UUID) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM mutes WHERE muter_id = $1 AND muted_id = $2", muter_id, muted_id)


def _own_list_sql(table: str, owner: str, listed: str, *, with_cursor: bool) -> str:
    """The caller's ($1) blocks or mutes, $2 at most, after position ($3, $4), on blocks_list_idx /
    mutes_list_idx."""
    after = f"AND (x.created_at, x.{listed}) < ($3, $4)" if with_cursor else ""
    return f"""
        SELECT x.{listed} AS user_id, x.created_at AS at,
               (SELECT u.display_name FROM users u WHERE u.id = x.{listed}) AS display_name
        FROM {table} x
        WHERE x.{owner} = $1 {after}
        ORDER BY x.created_at DESC, x.{listed} DESC
        LIMIT $2"""


BLOCKS_SQL = _own_list_sql("blocks", "blocker_id", "blocked_id", with_cursor=False)
BLOCKS_AFTER_SQL = _own_list_sql("blocks", "blocker_id", "blocked_id", with_cursor=True)
MUTES_SQL = _own_list_sql("mutes", "muter_id", "muted_id", with_cursor=False)
MUTES_AFTER_SQL = _own_list_sql("mutes", "muter_id", "muted_id", with_cursor=True)


async def aio_blocks(pool: asyncpg.Pool, user_id: UUID, limit: int, cursor: Position | None) -> list[ListedUser]:
    rows = await fetch_page(pool, BLOCKS_SQL, BLOCKS_AFTER_SQL, (user_id, limit), cursor)
    return [ListedUser(row["user_id"], row["display_name"], row["at"]) for row in rows]


async def aio_mutes(pool: asyncpg.Pool, user_id: UUID, limit: int, cursor: Position | None) -> list[ListedUser]:
    rows = await fetch_page(pool, MUTES_SQL, MUTES_AFTER_SQL, (user_id, limit), cursor)
    return [ListedUser(row["user_id"], row["display_name"], row["at"]) for row in rows]
