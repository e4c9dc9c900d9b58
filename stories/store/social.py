"""The SQL of profiles, follow lists, blocks, mutes, story deletion and "seen by" (API.md "Profiles", "Social graph").

Same rules as queries.py: asyncio coroutines named `aio_*`, the pool first, one connection each, frozen records
out. Every list is keyset-paged newest first on an index that matches its order (schema/0009_social.sql), so a
page costs the same at the top of a list of ten entries as deep in one of a million.

Lists answer None for "not found" (an unknown user or story, one the reader may not see) and a list otherwise:
each is one statement that reads the subject and its page together (`FROM subject LEFT JOIN LATERAL page`), so
an empty page and a missing subject are told apart without a second round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.errors import Unauthorized
from stories.store.models import Block, ListedUser, Mute, Profile, Viewer
from stories.store.queries import _caller_exists, pair_lock

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    import asyncpg

    from stories.store.models import Position

__all__ = [
    "aio_block",
    "aio_blocks",
    "aio_delete_story",
    "aio_followers",
    "aio_following",
    "aio_me",
    "aio_mute",
    "aio_mutes",
    "aio_profile",
    "aio_set_display_name",
    "aio_unblock",
    "aio_unmute",
    "aio_viewers",
]

# Users in a block with reader $2, either way: left out of the follow lists the reader reads, so a blocked user
# cannot follow the blocker's activity through third parties' lists. Uncorrelated: hashed once per query.
_BLOCKED_WITH_READER = """(
    SELECT b.blocked_id FROM blocks b WHERE b.blocker_id = $2
    UNION ALL SELECT b.blocker_id FROM blocks b WHERE b.blocked_id = $2)"""


def _profile(row: asyncpg.Record, *, email: str | None = None) -> Profile:
    return Profile(
        user_id=row["id"],
        display_name=row["display_name"],
        created_at=row["created_at"],
        followers=row["followers_count"],
        following=row["following_count"],
        email=email,
        followed_by_me=row.get("followed_by_me", False),
        follows_me=row.get("follows_me", False),
    )


_PROFILE_COLUMNS = "u.id, u.display_name, u.created_at, u.followers_count, u.following_count"


async def aio_me(pool: asyncpg.Pool, user_id: UUID) -> Profile | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT {_PROFILE_COLUMNS}, u.email FROM users u WHERE u.id = $1", user_id)
    return None if row is None else _profile(row, email=row["email"])


async def aio_set_display_name(pool: asyncpg.Pool, user_id: UUID, display_name: str | None) -> Profile:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"UPDATE users u SET display_name = $2 WHERE u.id = $1 RETURNING {_PROFILE_COLUMNS}, u.email",
            user_id,
            display_name,
        )
    if row is None:
        raise Unauthorized("the token's user does not exist; sign up or log in again")
    return _profile(row, email=row["email"])


async def aio_profile(pool: asyncpg.Pool, reader_id: UUID, user_id: UUID) -> Profile | None:
    """A user's public profile as `reader_id` sees it; None when unknown or when they have blocked the reader."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""SELECT {_PROFILE_COLUMNS},
                       EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = u.id)
                           AS followed_by_me,
                       EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = $1)
                           AS follows_me
                FROM users u
                WHERE u.id = $2
                  AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = u.id AND b.blocked_id = $1)""",
            reader_id,
            user_id,
        )
    return None if row is None else _profile(row)


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
            WHERE f.{subject} = t.id {after} AND f.{listed} NOT IN {_BLOCKED_WITH_READER}
            ORDER BY f.created_at DESC, f.{listed} DESC
            LIMIT $3) p ON true
        WHERE t.id = $1 AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = $1 AND b.blocked_id = $2)
        ORDER BY p.at DESC, p.user_id DESC"""


FOLLOWERS_SQL = _follow_list_sql("follower_id", "followee_id", with_cursor=False)
FOLLOWERS_AFTER_SQL = _follow_list_sql("follower_id", "followee_id", with_cursor=True)
FOLLOWING_SQL = _follow_list_sql("followee_id", "follower_id", with_cursor=False)
FOLLOWING_AFTER_SQL = _follow_list_sql("followee_id", "follower_id", with_cursor=True)


async def _page(
    pool: asyncpg.Pool, first: str, after: str, args: tuple[object, ...], cursor: Position | None
) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        if cursor is None:
            return await conn.fetch(first, *args)
        return await conn.fetch(after, *args, cursor.at, cursor.id)


async def aio_followers(
    pool: asyncpg.Pool, reader_id: UUID, user_id: UUID, limit: int, cursor: Position | None
) -> list[ListedUser] | None:
    """Who follows `user_id`, newest follow first; None when unknown or when they have blocked the reader."""
    rows = await _page(pool, FOLLOWERS_SQL, FOLLOWERS_AFTER_SQL, (user_id, reader_id, limit), cursor)
    return _listed(rows)


async def aio_following(
    pool: asyncpg.Pool, reader_id: UUID, user_id: UUID, limit: int, cursor: Position | None
) -> list[ListedUser] | None:
    """Whom `user_id` follows, newest follow first; None when unknown or when they have blocked the reader."""
    rows = await _page(pool, FOLLOWING_SQL, FOLLOWING_AFTER_SQL, (user_id, reader_id, limit), cursor)
    return _listed(rows)


# --- blocks and mutes ----------------------------------------------------------------------------------


async def aio_block(pool: asyncpg.Pool, blocker_id: UUID, blocked_id: UUID, now: datetime) -> Block | None:
    """Block (idempotent: the original block is returned) and remove the follows between the two, both ways, in
    the same transaction. None when the user does not exist. Under the pair's lock, as follows are."""
    async with pool.acquire() as conn, _caller_exists(), conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", pair_lock(blocker_id, blocked_id))
        row = await conn.fetchrow(
            """WITH target AS (SELECT id FROM users WHERE id = $2),
                    added AS (INSERT INTO blocks (blocker_id, blocked_id, created_at)
                              SELECT $1, id, $3 FROM target
                              ON CONFLICT (blocker_id, blocked_id) DO NOTHING
                              RETURNING created_at),
                    unfollowed AS (DELETE FROM follows
                                   WHERE (follower_id = $1 AND followee_id = $2)
                                      OR (follower_id = $2 AND followee_id = $1))
               SELECT (SELECT created_at FROM added) AS added,
                      (SELECT created_at FROM blocks WHERE blocker_id = $1 AND blocked_id = $2) AS existing,
                      EXISTS (SELECT 1 FROM target) AS target_exists""",
            blocker_id,
            blocked_id,
            now,
        )
    if row is None or not row["target_exists"]:
        return None
    return Block(blocker_id, blocked_id, row["added"] or row["existing"])


async def aio_unblock(pool: asyncpg.Pool, blocker_id: UUID, blocked_id: UUID) -> None:
    """Unblock (idempotent). The follows the block removed stay removed."""
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM blocks WHERE blocker_id = $1 AND blocked_id = $2", blocker_id, blocked_id)


async def aio_mute(pool: asyncpg.Pool, muter_id: UUID, muted_id: UUID, now: datetime) -> Mute | None:
    """Mute (idempotent: the original mute is returned). None when the user does not exist."""
    async with pool.acquire() as conn, _caller_exists():
        row = await conn.fetchrow(
            """WITH target AS (SELECT id FROM users WHERE id = $2),
                    added AS (INSERT INTO mutes (muter_id, muted_id, created_at)
                              SELECT $1, id, $3 FROM target
                              ON CONFLICT (muter_id, muted_id) DO NOTHING
                              RETURNING created_at)
               SELECT (SELECT created_at FROM added) AS added,
                      (SELECT created_at FROM mutes WHERE muter_id = $1 AND muted_id = $2) AS existing,
                      EXISTS (SELECT 1 FROM target) AS target_exists""",
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
    rows = await _page(pool, BLOCKS_SQL, BLOCKS_AFTER_SQL, (user_id, limit), cursor)
    return [ListedUser(row["user_id"], row["display_name"], row["at"]) for row in rows]


async def aio_mutes(pool: asyncpg.Pool, user_id: UUID, limit: int, cursor: Position | None) -> list[ListedUser]:
    rows = await _page(pool, MUTES_SQL, MUTES_AFTER_SQL, (user_id, limit), cursor)
    return [ListedUser(row["user_id"], row["display_name"], row["at"]) for row in rows]


# --- a story's author: delete, "seen by" ---------------------------------------------------------------


async def aio_delete_story(pool: asyncpg.Pool, author_id: UUID, story_id: UUID, now: datetime) -> bool:
    """Soft-delete the author's story (idempotent: an already deleted or expired one stays as it is). False when
    no story with this id is theirs. One statement; `deleted_at` takes every read's `deleted_at IS NULL` and the
    expiry worker's media clean-up with it."""
    async with pool.acquire() as conn:
        return bool(
            await conn.fetchval(
                """WITH target AS (SELECT id, deleted_at FROM stories WHERE id = $2 AND author_id = $1),
                        gone AS (UPDATE stories s SET deleted_at = $3
                                 FROM target t WHERE s.id = t.id AND s.deleted_at IS NULL
                                 RETURNING s.id)
                   SELECT EXISTS (SELECT 1 FROM target)""",
                author_id,
                story_id,
                now,
            )
        )


def _viewers_sql(*, with_cursor: bool) -> str:
    """Story $1 of author $2 created after $3 (active, expired or deleted): its views, $4 at most, most recent
    first, after position ($5, $6), walking story_views_recent_idx; viewers the author blocked are left out.
    Each row carries the viewer's name (primary key) and reactions to the story, oldest first
    (reactions_story_user_idx): one statement per page."""
    after = "AND (v.viewed_at, v.viewer_id) < ($5, $6)" if with_cursor else ""
    return f"""
        SELECT p.user_id, p.display_name, p.viewed_at, p.reactions
        FROM stories s
        LEFT JOIN LATERAL (
            SELECT v.viewer_id AS user_id, v.viewed_at,
                   (SELECT u.display_name FROM users u WHERE u.id = v.viewer_id) AS display_name,
                   ARRAY(SELECT r.emoji FROM reactions r WHERE r.story_id = v.story_id AND r.user_id = v.viewer_id
                         ORDER BY r.created_at, r.id) AS reactions
            FROM story_views v
            WHERE v.story_id = s.id {after}
              AND v.viewer_id NOT IN (SELECT b.blocked_id FROM blocks b WHERE b.blocker_id = $2)
            ORDER BY v.viewed_at DESC, v.viewer_id DESC
            LIMIT $4) p ON true
        WHERE s.id = $1 AND s.author_id = $2 AND s.created_at > $3
        ORDER BY p.viewed_at DESC, p.user_id DESC"""


VIEWERS_SQL = _viewers_sql(with_cursor=False)
VIEWERS_AFTER_SQL = _viewers_sql(with_cursor=True)


async def aio_viewers(
    pool: asyncpg.Pool, author_id: UUID, story_id: UUID, since: datetime, limit: int, cursor: Position | None
) -> list[Viewer] | None:
    """Who viewed the author's story, most recent first; None when the story is not theirs or older than
    `since`."""
    rows = await _page(pool, VIEWERS_SQL, VIEWERS_AFTER_SQL, (story_id, author_id, since, limit), cursor)
    if not rows:
        return None
    return [
        Viewer(row["user_id"], row["display_name"], row["viewed_at"], tuple(row["reactions"]))
        for row in rows
        if row["user_id"] is not None
    ]
