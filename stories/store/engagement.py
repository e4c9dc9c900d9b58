"""Engagement: views, reactions, their counters, an author's stats and a story's viewers ("seen by")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.store.foreign_keys import caller_exists
from stories.store.idempotency import aio_claim_idempotency_key, aio_keep_response
from stories.store.keyset import fetch_page
from stories.store.models import IdempotencyClaim, Reaction, Replay, Stats, View, Viewer
from stories.store.visibility import VISIBLE, users_blocked_by

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from uuid import UUID

    import asyncpg

    from stories.store.models import Position


async def aio_record_view(pool: asyncpg.Pool, viewer_id: UUID, now: datetime, story_id: UUID) -> View | None:
    """Record the first view of a visible story; later views return the original. None when not visible.

    One statement. The author's own views are not recorded (first_view false, viewed_at now). The story's
    view_count is not touched here: the counter flusher recounts touched stories once per tick, so a viral
    story's row is never a lock every viewer queues on.
    """
    async with pool.acquire() as conn, caller_exists():
        row = await conn.fetchrow(
            f"""WITH target AS (SELECT s.id, s.author_id FROM stories s WHERE s.id = $3 AND {VISIBLE}),
                     added AS (INSERT INTO story_views (story_id, author_id, viewer_id, viewed_at)
                               SELECT id, author_id, $1, $2 FROM target WHERE author_id <> $1
                               ON CONFLICT (story_id, viewer_id) DO NOTHING
                               RETURNING viewed_at)
                SELECT t.author_id,
                       (SELECT viewed_at FROM added) AS added,
                       (SELECT v.viewed_at FROM story_views v WHERE v.story_id = t.id AND v.viewer_id = $1)
                           AS existing
                FROM target t""",
            viewer_id,
            now,
            story_id,
        )
        if row is None:
            return None
        author_id = row["author_id"]
        if author_id == viewer_id:
            return View(story_id, author_id, viewer_id, now, first_view=False)
        if row["added"] is not None:
            return View(story_id, author_id, viewer_id, row["added"], first_view=True)
        viewed_at = row["existing"]
        if viewed_at is None:
            # A concurrent first view committed after this statement's snapshot: read it now.
            viewed_at = await conn.fetchval(
                "SELECT viewed_at FROM story_views WHERE story_id = $1 AND viewer_id = $2", story_id, viewer_id
            )
    return View(story_id, author_id, viewer_id, viewed_at, first_view=False)


_ADD_REACTION_SQL = f"""
    WITH target AS (SELECT s.id, s.author_id FROM stories s WHERE s.id = $3 AND {VISIBLE}),
         added AS (INSERT INTO reactions (id, story_id, author_id, user_id, emoji, created_at)
                   SELECT $4, id, author_id, $1, $5, $2 FROM target RETURNING id)
    SELECT t.author_id FROM target t, added"""


class _NotVisible(Exception):
    """Rolls back a claimed key when the story is not visible: a 404 stores no response to replay."""


async def aio_add_reaction(
    pool: asyncpg.Pool,
    user_id: UUID,
    now: datetime,
    story_id: UUID,
    reaction_id: UUID,
    emoji: str,
    claim: IdempotencyClaim[Reaction] | None = None,
) -> Reaction | Replay | None:
    """Add a reaction to a visible story (None when not visible); the counter is the flusher's. Without a claim,
    one statement. With one, the key is claimed in the same transaction: a retry gets the first response as a
    Replay and adds nothing (IdempotencyKeyReused for another body)."""
    async with pool.acquire() as conn, caller_exists():
        if claim is None:
            author_id = await conn.fetchval(_ADD_REACTION_SQL, user_id, now, story_id, reaction_id, emoji)
            return None if author_id is None else Reaction(reaction_id, story_id, author_id, user_id, emoji, now)
        try:
            async with conn.transaction():
                replay = await aio_claim_idempotency_key(conn, user_id, claim, now)
                if replay is not None:
                    return replay
                author_id = await conn.fetchval(_ADD_REACTION_SQL, user_id, now, story_id, reaction_id, emoji)
                if author_id is None:
                    raise _NotVisible
                reaction = Reaction(reaction_id, story_id, author_id, user_id, emoji, now)
                await aio_keep_response(conn, user_id, claim, claim.render(reaction))
                return reaction
        except _NotVisible:
            return None


async def aio_recount(pool: asyncpg.Pool, story_ids: Sequence[UUID]) -> None:
    """Set view_count and reaction_count of these stories from their rows: idempotent, so a recount can never
    count twice, and a process that died before flushing loses nothing (the expiry worker recounts too)."""
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE stories s
               SET view_count = (SELECT count(*) FROM story_views v WHERE v.story_id = s.id),
                   reaction_count = (SELECT count(*) FROM reactions r WHERE r.story_id = s.id)
               WHERE s.id = ANY($1::uuid[])""",
            list(story_ids),
        )


async def aio_stats(pool: asyncpg.Pool, author_id: UUID, since: datetime) -> Stats:
    """The author's stories created after `since` (expired and deleted included). Views, viewers and reactions
    are counted from their rows (bounded by the author's own stories), so stats never lag like the counters."""
    async with pool.acquire() as conn:
        totals = await conn.fetchrow(
            """WITH mine AS (SELECT id FROM stories WHERE author_id = $1 AND created_at > $2),
                    seen AS (SELECT v.viewer_id FROM story_views v JOIN mine ON v.story_id = mine.id)
               SELECT (SELECT count(*) FROM mine) AS posted,
                      (SELECT count(*) FROM seen) AS views,
                      (SELECT count(DISTINCT viewer_id) FROM seen) AS unique_viewers""",
            author_id,
            since,
        )
        reactions = await conn.fetch(
            """SELECT r.emoji, count(*) AS n FROM reactions r
               JOIN stories s ON s.id = r.story_id
               WHERE s.author_id = $1 AND s.created_at > $2
               GROUP BY r.emoji""",
            author_id,
            since,
        )
    assert totals is not None  # an aggregate SELECT always returns one row
    return Stats(
        posted=totals["posted"],
        views=totals["views"],
        unique_viewers=totals["unique_viewers"],
        reactions={row["emoji"]: row["n"] for row in reactions},
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
              AND v.viewer_id NOT IN {users_blocked_by("$2")}
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
    rows = await fetch_page(pool, VIEWERS_SQL, VIEWERS_AFTER_SQL, (story_id, author_id, since, limit), cursor)
    if not rows:
        return None
    return [
        Viewer(row["user_id"], row["display_name"], row["viewed_at"], tuple(row["reactions"]))
        for row in rows
        if row["user_id"] is not None
    ]
