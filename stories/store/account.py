"""A user's whole account (API.md "Your account and your data"): erase it (DELETE /me), read it back in chunks
(GET /me/export). The SQL runs on the asyncio side (`aio_*`), as in the rest of the store; `AccountStore` is
the trio side.

Erasure is one transaction. It first locks the user row FOR UPDATE: every write that names the user takes a
KEY SHARE lock on that row through its foreign key, so the deletion waits for the writes in flight and sees
them, and a write that comes later fails its foreign key check once the row is gone (foreign_keys.py turns that
into a 401). Upload records have no foreign key (schema/0008_media.sql): issuing one takes the same lock by hand
(stories/store/uploads.py).

The export is read section by section, each in keyset-ordered chunks of one query each, so memory stays flat
whatever the account's size. Chunks are separate statements: a row written during an export may or may not
appear in it. A new kind of data of the user is one more entry in EXPORT_SECTIONS.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from stories.store.database import OnDatabase, Query
from stories.store.keyset import owned_after

__all__ = ["EXPORT_SECTIONS", "AccountStore", "DeletedAccount", "ExportSection"]

# A deletion aborted by a deadlock is run again this many times in all.
DEADLOCK_ATTEMPTS = 3
_FIRST_TIME = datetime.min.replace(tzinfo=UTC)
_LAST_TIME = datetime.max.replace(tzinfo=UTC)
_FIRST_ID = UUID(int=0)
_LAST_ID = UUID(int=(1 << 128) - 1)


@dataclass(frozen=True, slots=True)
class DeletedAccount:
    """What the callers of a deletion must tell the caches: the user's stories a cached feed page may hold."""

    live_story_ids: list[UUID]


@dataclass(frozen=True, slots=True)
class ExportSection:
    """One list in the export document. `sql` reads the user's ($1) rows after a keyset position ($2, ...),
    at most `limit` (the last parameter), in the position's order (keyset.owned_after writes that part); `key`
    names the columns that position the next chunk, and `start` is the position before the first row."""

    name: str
    sql: str
    key: tuple[str, ...]
    start: tuple[Any, ...]


EXPORT_SECTIONS: tuple[ExportSection, ...] = (
    # Sessions without their refresh tokens' hashes (session_tokens): no token material.
    ExportSection(
        "sessions",
        owned_after(
            "SELECT s.id AS session_id, s.created_at, s.last_used_at, s.user_agent, s.revoked_at FROM sessions s",
            "s.user_id",
            ("s.last_used_at", "s.id"),
            descending=True,
        ),
        ("last_used_at", "session_id"),
        (_LAST_TIME, _LAST_ID),
    ),
    ExportSection(
        "stories",
        owned_after(
            """SELECT s.id, s.text, s.media_key, s.visibility, s.created_at, s.expires_at, s.deleted_at,
                      s.view_count, s.reaction_count,
                      ARRAY(SELECT a.user_id FROM story_audience a WHERE a.story_id = s.id ORDER BY a.user_id)
                          AS audience_user_ids
               FROM stories s""",
            "s.author_id",
            ("s.created_at", "s.id"),
        ),
        ("created_at", "id"),
        (_FIRST_TIME, _FIRST_ID),
    ),
    ExportSection(
        "views",
        owned_after("SELECT v.story_id, v.viewed_at FROM story_views v", "v.viewer_id", ("v.story_id",)),
        ("story_id",),
        (_FIRST_ID,),
    ),
    ExportSection(
        "reactions",
        owned_after(
            "SELECT r.id, r.story_id, r.emoji, r.created_at FROM reactions r", "r.user_id", ("r.created_at", "r.id")
        ),
        ("created_at", "id"),
        (_FIRST_TIME, _FIRST_ID),
    ),
    ExportSection(
        "following",
        owned_after(
            "SELECT f.followee_id AS user_id, f.created_at AS followed_at FROM follows f",
            "f.follower_id",
            ("f.followee_id",),
        ),
        ("user_id",),
        (_FIRST_ID,),
    ),
    ExportSection(
        "followers",
        owned_after(
            "SELECT f.follower_id AS user_id, f.created_at AS followed_at FROM follows f",
            "f.followee_id",
            ("f.created_at", "f.follower_id"),
            descending=True,
        ),
        ("followed_at", "user_id"),
        (_LAST_TIME, _LAST_ID),
    ),
    ExportSection(
        "blocks",
        owned_after(
            "SELECT b.blocked_id AS user_id, b.created_at AS blocked_at FROM blocks b",
            "b.blocker_id",
            ("b.blocked_id",),
        ),
        ("user_id",),
        (_FIRST_ID,),
    ),
    ExportSection(
        "mutes",
        owned_after(
            "SELECT m.muted_id AS user_id, m.created_at AS muted_at FROM mutes m", "m.muter_id", ("m.muted_id",)
        ),
        ("user_id",),
        (_FIRST_ID,),
    ),
    # The reports the user filed (what they reported, why, and its note), not what others reported about them.
    ExportSection(
        "reports",
        owned_after(
            """SELECT r.id AS report_id, r.target_type, r.story_id, r.user_id, r.reason, r.note, r.created_at
               FROM reports r""",
            "r.reporter_id",
            ("r.created_at", "r.id"),
        ),
        ("created_at", "report_id"),
        (_FIRST_TIME, _FIRST_ID),
    ),
    ExportSection(
        "uploads",
        owned_after(
            """SELECT u.key AS media_key, u.content_type, u.size, u.issued_at, u.story_id, u.deleted_at
               FROM media_uploads u""",
            "u.user_id",
            ("u.key",),
        ),
        ("media_key",),
        ("",),
    ),
)


async def aio_delete_account(pool: asyncpg.Pool, user_id: UUID, now: datetime) -> DeletedAccount | None:
    """Erase the user and everything of theirs in one transaction; None when there is no such user.

    The recount locks other users' stories, which a counter flush (or a cascade of another deletion) may lock in
    another order: PostgreSQL then aborts one of the two, and the deletion, which wrote nothing yet that stays,
    runs again."""
    attempt = 1
    while True:
        try:
            return await _delete_account(pool, user_id, now)
        except asyncpg.DeadlockDetectedError:
            if attempt == DEADLOCK_ATTEMPTS:
                raise
            attempt += 1


async def _delete_account(pool: asyncpg.Pool, user_id: UUID, now: datetime) -> DeletedAccount | None:
    async with pool.acquire() as conn, conn.transaction():
        # Waits for the user's writes in flight (their foreign keys hold KEY SHARE on this row), fails later
        # ones; the statements below run after those committed and see their rows (READ COMMITTED).
        if await conn.fetchval("SELECT true FROM users WHERE id = $1 FOR UPDATE", user_id) is None:
            return None
        live = await conn.fetch(
            "SELECT id FROM stories WHERE author_id = $1 AND deleted_at IS NULL AND expires_at > $2", user_id, now
        )
        # Other users' stories this user viewed or reacted to: their counters are set again from their rows
        # once those rows are gone. Locked in id order, as a recount of the counter flusher may run meanwhile.
        touched = await conn.fetch(
            """SELECT s.id FROM stories s
               WHERE s.author_id <> $1
                 AND s.id IN (SELECT story_id FROM story_views WHERE viewer_id = $1
                              UNION SELECT story_id FROM reactions WHERE user_id = $1)
               ORDER BY s.id FOR NO KEY UPDATE""",
            user_id,
        )
        # The sweeper's queue keeps every object key of the user, due now; it deletes each object at its next run
        # and then the row (once the key's upload URL has expired, as for every key). Done before the stories go,
        # so their deletion trigger finds no row of theirs to give another reason.
        await conn.execute(
            """UPDATE media_uploads
               SET user_id = NULL, story_id = NULL, delete_after = $2,
                   delete_reason = CASE WHEN deleted_at IS NULL THEN 'account_deleted' ELSE delete_reason END
               WHERE user_id = $1""",
            user_id,
            now,
        )
        # Moderation's audit log outlives what it is about (docs/choices.md), so its entries about the user or
        # their stories stay, under a new random id per target: the decisions remain, nothing links them to the
        # person any more.
        await conn.execute(
            """WITH gone AS (SELECT $1::uuid AS id, gen_random_uuid() AS alias
                             UNION ALL SELECT id, gen_random_uuid() FROM stories WHERE author_id = $1)
               UPDATE moderation_audit a SET target_id = gone.alias FROM gone WHERE a.target_id = gone.id""",
            user_id,
        )
        # The foreign keys cascade: stories (with their audience, views and reactions), the user's audience
        # entries, views and reactions on other stories, follows both ways, blocks, mutes, idempotency keys,
        # sessions, the moderator role, reports about the user; reports they filed lose their reporter, and
        # audit entries of their decisions as a moderator their actor.
        await conn.execute("DELETE FROM users WHERE id = $1", user_id)
        if touched:
            await conn.execute(
                """UPDATE stories s
                   SET view_count = (SELECT count(*) FROM story_views v WHERE v.story_id = s.id),
                       reaction_count = (SELECT count(*) FROM reactions r WHERE r.story_id = s.id)
                   WHERE s.id = ANY($1::uuid[])""",
                [row["id"] for row in touched],
            )
    return DeletedAccount([row["id"] for row in live])


async def aio_export_profile(pool: asyncpg.Pool, user_id: UUID) -> dict[str, Any] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT id AS user_id, email, display_name, created_at, followers_count, following_count
               FROM users WHERE id = $1""",
            user_id,
        )
    return None if row is None else dict(row)


async def aio_export_chunk(
    pool: asyncpg.Pool, section: ExportSection, user_id: UUID, after: tuple[Any, ...], limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` rows of the section after the position `after` (the section's `start` at first)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(section.sql, user_id, *after, limit)
    return [dict(row) for row in rows]


class AccountStore(OnDatabase):
    """The account use cases. Safe to share between tasks; raises the store's errors."""

    delete = Query(aio_delete_account)
    profile = Query(aio_export_profile)
    chunk = Query(aio_export_chunk)
