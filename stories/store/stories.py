"""Stories and the feed: create (with its audience, upload and Idempotency-Key), read one, the feed's pages,
delete (API.md "Stories", "Feed"). The columns and row mapping of a story are here; who may see one is in
visibility.py."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING

from stories.errors import InvalidRequest, MediaNotUploaded
from stories.store.foreign_keys import caller_exists
from stories.store.idempotency import aio_claim_idempotency_key
from stories.store.models import FeedCursor, IdempotencyClaim, Replay, Story
from stories.store.uploads import UploadClaim, aio_attach_upload
from stories.store.visibility import HIDDEN_FROM_FEED, READABLE, VISIBLE

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy


STORY_COLUMNS = (
    "s.id, s.author_id, s.text, s.media_key, s.visibility, s.created_at, s.expires_at, s.view_count, s.reaction_count"
)


# The author's display name, read by primary key for each story returned (never for the candidates a feed drops).
AUTHOR_NAME = "(SELECT u.display_name FROM users u WHERE u.id = s.author_id) AS author_name"


def story_from_row(row: asyncpg.Record, prefix: str = "") -> Story:
    """The story in `row`'s columns named as STORY_COLUMNS and author_name, each after `prefix` (a query that
    reads other rows beside it names the story's columns apart, e.g. "s_id")."""
    return Story(
        id=row[f"{prefix}id"],
        author_id=row[f"{prefix}author_id"],
        text=row[f"{prefix}text"],
        media_key=row[f"{prefix}media_key"],
        visibility=row[f"{prefix}visibility"],
        created_at=row[f"{prefix}created_at"],
        expires_at=row[f"{prefix}expires_at"],
        view_count=row[f"{prefix}view_count"],
        reaction_count=row[f"{prefix}reaction_count"],
        author_name=row[f"{prefix}author_name"],
    )


async def aio_create_story(
    pool: asyncpg.Pool,
    story: Story,
    audience: Sequence[UUID],
    claim: IdempotencyClaim[Story] | None,
    upload: UploadClaim | None = None,
) -> Story | Replay:
    """Insert the story and its audience in one transaction; return it as created, with the author's display
    name. With a claim, first claim the key:

    - new key (or one older than 24 h): claimed (with the rendered response), story created and returned;
    - key held by a request with the same body: nothing created, that request's response returned (Replay);
    - key held by a different body: IdempotencyKeyReused.
    A concurrent request with the same key blocks on the key's primary key until the first commits or rolls
    back, so exactly one story is created. Unknown audience ids: InvalidRequest, nothing written.
    With an upload, the story takes its key (issued to the author within 24 h, unused: else InvalidRequest), and
    an object the store reported missing is MediaNotUploaded; nothing written either way.
    A story with neither claim, audience nor upload is the single INSERT alone: one round trip, no BEGIN/COMMIT.
    """
    atomic = claim is not None or bool(audience) or upload is not None
    async with pool.acquire() as conn, caller_exists(), conn.transaction() if atomic else nullcontext():
        if claim is not None:
            # The stored response shows the author's display name, so it is read first; the story returned
            # keeps this name, so the first response and every replay of it agree.
            story = replace(
                story,
                author_name=await conn.fetchval("SELECT display_name FROM users WHERE id = $1", story.author_id),
            )
            replay = await aio_claim_idempotency_key(
                conn, story.author_id, claim, story.created_at, claim.render(story)
            )
            if replay is not None:
                return replay
        if audience:
            known = await conn.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[])", list(audience))
            unknown = set(audience) - {row["id"] for row in known}
            if unknown:
                listed = ", ".join(sorted(str(u) for u in unknown))
                raise InvalidRequest(
                    f"audience_user_ids: unknown users {listed}",
                    fields={"audience_user_ids": f"unknown users: {listed}"},
                )
        inserted_name = await conn.fetchval(
            """INSERT INTO stories (id, author_id, text, media_key, visibility, has_audience, created_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               RETURNING (SELECT display_name FROM users WHERE id = $2)""",
            story.id,
            story.author_id,
            story.text,
            story.media_key,
            story.visibility,
            bool(audience),
            story.created_at,
            story.expires_at,
        )
        if audience:
            await conn.executemany(
                "INSERT INTO story_audience (story_id, user_id) VALUES ($1, $2)",
                [(story.id, user_id) for user_id in audience],
            )
        if upload is not None:
            # After the insert, whose foreign key locks the author's row first: an account deletion locks that
            # row, then the user's upload rows; taking the upload row first could deadlock with it.
            await _take_upload(conn, story, upload)
    return story if claim is not None else replace(story, author_name=inserted_name)


async def _take_upload(conn: PoolConnectionProxy[asyncpg.Record], story: Story, upload: UploadClaim) -> None:
    copied = upload.uploaded is True
    if not await aio_attach_upload(conn, upload.key, story.author_id, story.id, story.created_at, copied):
        problem = "must be a key issued to you by POST /upload/presigned in the last 24 hours, used by no other story"
        raise InvalidRequest(f"media_key: {problem}", fields={"media_key": problem})
    if upload.uploaded is False:
        raise MediaNotUploaded(
            "media_key: nothing was uploaded with this key; PUT the file to the upload_url first",
            fields={"media_key": "not uploaded"},
        )


async def aio_visible_story(pool: asyncpg.Pool, viewer_id: UUID, now: datetime, story_id: UUID) -> Story | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {STORY_COLUMNS}, {AUTHOR_NAME} FROM stories s WHERE s.id = $3 AND {VISIBLE}",
            viewer_id,
            now,
            story_id,
        )
    return None if row is None else story_from_row(row)


def feed_stories(after: str = "", order: str = "", author: str = "") -> str:
    """What the feed of viewer $1 at instant $2 holds: the one definition the feed and the tray both read.

    Three disjoint index-ordered branches (no DISTINCT needed), each filtered by `after` and ordered/bounded by
    `order` when given:
    public: live public stories (stories_public_feed_idx) of authors not hidden from the viewer;
    own: the viewer's non-public stories (stories_author_feed_idx);
    friends: per followee not hidden from the viewer, their friends stories (stories_friends_feed_idx),
    audience-checked. (A block removes the follows between the pair, so the friends branch would drop blocked
    authors anyway; the check there is one probe per followee and keeps the rule in one place.)
    `author` (an expression, e.g. an outer column) narrows it to that author's stories: each branch is then one
    index range of the author, and the friends branch is gated by one probe of `follows` instead of walking
    them (the tray places authors this way, a few probes each).
    """
    live = f"{READABLE} {after}" if not author else f"{READABLE} AND s.author_id = {author} {after}"
    audience = """AND (NOT s.has_audience
                            OR EXISTS (SELECT 1 FROM story_audience a WHERE a.story_id = s.id AND a.user_id = $1))"""
    if author:
        friends = f"""(SELECT {STORY_COLUMNS} FROM stories s
                  WHERE s.visibility = 'friends' AND {live} {audience}
                    AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = {author}
                                                          AND f.followee_id NOT IN {HIDDEN_FROM_FEED})
                  {order})"""
    else:
        friends = f"""(SELECT fs.* FROM follows f CROSS JOIN LATERAL (
                    SELECT {STORY_COLUMNS} FROM stories s
                     WHERE s.author_id = f.followee_id AND s.visibility = 'friends' AND {live}
                       {audience}
                     {order}) fs
                  WHERE f.follower_id = $1 AND f.followee_id NOT IN {HIDDEN_FROM_FEED})"""
    return f"""
                (SELECT {STORY_COLUMNS} FROM stories s
                  WHERE s.visibility = 'public' AND {live} AND s.author_id NOT IN {HIDDEN_FROM_FEED} {order})
                UNION ALL
                (SELECT {STORY_COLUMNS} FROM stories s
                  WHERE s.author_id = $1 AND s.visibility <> 'public' AND {live} {order})
                UNION ALL
                {friends}"""


def _feed_sql(with_cursor: bool) -> str:
    """The feed: `feed_stories`, each branch bounded by the page size ($3), merged by one sort.

    Keyset: ($4, $5) is the last (created_at, id) served. The page's authors' display names are read last, by
    primary key, for the `$3` stories served only.
    """
    after = "AND (s.created_at, s.id) < ($4, $5)" if with_cursor else ""
    order = "ORDER BY s.created_at DESC, s.id DESC LIMIT $3"
    return f"""
        SELECT s.*, {AUTHOR_NAME} FROM (
            SELECT * FROM ({feed_stories(after, order)}
            ) feed
            ORDER BY created_at DESC, id DESC
            LIMIT $3
        ) s
        ORDER BY s.created_at DESC, s.id DESC"""


FEED_SQL = _feed_sql(with_cursor=False)
FEED_AFTER_SQL = _feed_sql(with_cursor=True)


async def aio_feed(
    pool: asyncpg.Pool, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None
) -> list[Story]:
    """Up to `limit` stories visible to the viewer, newest first, strictly after `cursor`. One query."""
    async with pool.acquire() as conn:
        if cursor is None:
            rows = await conn.fetch(FEED_SQL, viewer_id, now, limit)
        else:
            rows = await conn.fetch(FEED_AFTER_SQL, viewer_id, now, limit, cursor.created_at, cursor.id)
    return [story_from_row(row) for row in rows]


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
