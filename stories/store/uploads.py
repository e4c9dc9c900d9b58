"""Issued upload keys (table media_uploads, schema/0008_media.sql): the SQL (asyncio side, `aio_*`) and the
trio-facing `Uploads`, one bridge crossing per operation as in store.py.

A row is the record of an object that may exist in the bucket; it is deleted only after the store has confirmed
the object's deletion, so an outage of the store delays the lifecycle but never loses track of an object.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stories.domain import UPLOAD_KEY_LIFETIME
from stories.errors import UserGone
from stories.store.database import OnDatabase, Query
from stories.store.foreign_keys import caller_exists
from stories.store.idempotency import aio_claim_idempotency_key
from stories.store.locks import EXPIRY_LOCK_ID

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    from stories.store.models import IdempotencyClaim, Replay

__all__ = ["DueObject", "Uncopied", "UploadClaim", "Uploads", "aio_attach_upload"]

# An issued key may be used by a story for this long; unused, its object is deleted then.
# make_interval(secs => ...) takes the lifetime in seconds.
_UPLOAD_KEY_SECONDS = UPLOAD_KEY_LIFETIME.total_seconds()


# An issued key's row, from $1 key, $2 user, $3 content type, $4 size, $5 now and $6 the key's lifetime; the plain
# INSERT, or one that locks the user row (KEY SHARE) as a foreign key would (aio_issue_upload says when each).
_INSERT_UPLOAD = "INSERT INTO media_uploads (key, user_id, content_type, size, issued_at, delete_after, delete_reason) "
_ISSUE = (
    _INSERT_UPLOAD + "VALUES ($1, $2, $3, $4, $5, $5::timestamptz + make_interval(secs => $6), 'unused') RETURNING true"
)
_ISSUE_LOCKING_USER = (
    _INSERT_UPLOAD
    + """SELECT $1::text, u.id, $3::text, $4::bigint, $5::timestamptz, $5::timestamptz + make_interval(secs => $6),
                'unused'
         FROM (SELECT id FROM users WHERE id = $2 FOR KEY SHARE) u
         RETURNING true"""
)


async def _insert_upload(
    conn: PoolConnectionProxy, sql: str, key: str, user_id: UUID, content_type: str, size: int, now: datetime
) -> bool:
    """True when `sql` (_ISSUE or _ISSUE_LOCKING_USER) inserted the row: the locking one inserts none when the user
    does not exist (any more)."""
    return bool(await conn.fetchval(sql, key, user_id, content_type, size, now, _UPLOAD_KEY_SECONDS))


@dataclass(frozen=True, slots=True)
class UploadClaim:
    """A story's media key, to be taken in the story's transaction. `uploaded` is what the store said when asked to
    copy the object to the story's own key: True (copied), False (no object: media_not_uploaded) or None (the store
    did not answer: the copy is left to the expiry worker, `claim_uncopied`)."""

    key: str
    uploaded: bool | None


@dataclass(frozen=True, slots=True)
class DueObject:
    """An object due for deletion; `story_id`: the story that used it, whose own copy goes with it."""

    key: str
    reason: str
    story_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class Uncopied:
    """A live story's upload that the store did not copy at the story's creation."""

    key: str
    story_id: UUID


async def aio_issue_upload(
    pool: asyncpg.Pool, key: str, user_id: UUID, content_type: str, size: int, now: datetime
) -> bool:
    """Record the issued key; False when the user does not exist (any more). The row has no foreign key, so the
    user row is locked here as a foreign key would (KEY SHARE): an account deletion waits for this insert and
    hands its key to the sweeper, or this insert waits for the deletion and finds no user."""
    async with pool.acquire() as conn:
        return await _insert_upload(conn, _ISSUE_LOCKING_USER, key, user_id, content_type, size, now)


async def aio_issue_upload_once(
    pool: asyncpg.Pool,
    key: str,
    user_id: UUID,
    content_type: str,
    size: int,
    now: datetime,
    claim: IdempotencyClaim[bytes],
    response: bytes,
) -> Replay | None:
    """Issue the key and claim the Idempotency-Key with its response, in one transaction; the earlier
    response (a Replay) when the key was claimed with this body, and nothing is issued. Unauthorized when the
    user does not exist (any more): the claim's foreign key names them."""
    async with pool.acquire() as conn, caller_exists(), conn.transaction():
        replay = await aio_claim_idempotency_key(conn, user_id, claim, now, response)
        if replay is not None:
            return replay
        # Not aio_issue_upload's INSERT, which locks the user row (KEY SHARE): a claim that renewed an expired key
        # took no lock on it, and an account deletion holding that row waits for the claimed key: a deadlock.
        await _insert_upload(conn, _ISSUE, key, user_id, content_type, size, now)
    return None


async def aio_reissue_upload(pool: asyncpg.Pool, key: str, user_id: UUID, now: datetime) -> bool:
    """Issue an unused key again from `now` (a replayed request gets a fresh upload URL): its 24 hours, and the
    lifecycle's bookkeeping of when its upload URLs expire, start again. False when a story uses the key or the
    lifecycle is deleting it: a new URL would let the bytes change."""
    async with pool.acquire() as conn:
        reissued = await conn.fetchval(
            """UPDATE media_uploads
               SET issued_at = $3, delete_after = $3::timestamptz + make_interval(secs => $4)
               WHERE key = $1 AND user_id = $2 AND story_id IS NULL AND NOT deleting AND deleted_at IS NULL
               RETURNING true""",
            key,
            user_id,
            now,
            _UPLOAD_KEY_SECONDS,
        )
    return bool(reissued)


async def aio_attach_upload(
    conn: PoolConnectionProxy[asyncpg.Record], key: str, user_id: UUID, story_id: UUID, now: datetime, copied: bool
) -> bool:
    """Give the key to the story: only a key issued to `user_id` within 24 h, that no story uses and the lifecycle
    has not begun deleting. The row lock makes it single use under concurrency. Run inside the story's
    transaction. Not `copied`: the expiry worker copies the object to the story's key later."""
    taken = await conn.fetchval(
        """UPDATE media_uploads SET story_id = $3, delete_after = NULL, delete_reason = NULL, copy_pending = NOT $6
           WHERE key = $1 AND user_id = $2 AND story_id IS NULL AND NOT deleting
             AND issued_at > $4::timestamptz - make_interval(secs => $5)
           RETURNING true""",
        key,
        user_id,
        story_id,
        now,
        _UPLOAD_KEY_SECONDS,
        copied,
    )
    return bool(taken)


async def aio_claim_due(pool: asyncpg.Pool, now: datetime, limit: int, retry_at: datetime) -> list[DueObject] | None:
    """Up to `limit` objects due for deletion, oldest first, marked `deleting` and put off until `retry_at` (so a
    failed deletion is retried then, and no other process takes them meanwhile). None when another process holds
    the expiry lock."""
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EXPIRY_LOCK_ID):
            return None
        rows = await conn.fetch(
            """UPDATE media_uploads SET deleting = true, delete_after = $3
               WHERE key = ANY (ARRAY(SELECT key FROM media_uploads WHERE delete_after <= $1
                                      ORDER BY delete_after LIMIT $2 FOR UPDATE SKIP LOCKED))
               RETURNING key, delete_reason, story_id""",
            now,
            limit,
            retry_at,
        )
    return [DueObject(row["key"], row["delete_reason"], row["story_id"]) for row in rows]


async def aio_claim_uncopied(pool: asyncpg.Pool, now: datetime, limit: int, url_seconds: int) -> list[Uncopied]:
    """Up to `limit` live stories' uploads still to be copied to the story's key, once their upload URLs have
    expired (`url_seconds` after issue): the bytes cannot change any more, so a copy made now is final."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT key, story_id FROM media_uploads
               WHERE copy_pending AND delete_after IS NULL AND story_id IS NOT NULL
                 AND issued_at <= $1::timestamptz - make_interval(secs => $3)
               ORDER BY issued_at LIMIT $2""",
            now,
            limit,
            url_seconds,
        )
    return [Uncopied(row["key"], row["story_id"]) for row in rows]


async def aio_forget_copied(pool: asyncpg.Pool, keys: Sequence[str]) -> None:
    """The store holds these uploads' story copies now."""
    async with pool.acquire() as conn:
        await conn.execute("UPDATE media_uploads SET copy_pending = false WHERE key = ANY ($1::text[])", list(keys))


async def aio_forget_deleted(
    pool: asyncpg.Pool, keys: Sequence[str], now: datetime, url_seconds: int
) -> dict[str, int]:
    """The store deleted these objects: drop the rows whose upload URL has expired; keep the others until it has
    (due again then: the object is deleted once more, in case a client uploaded it meanwhile). Returns, per reason,
    how many objects were deleted for the first time."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """WITH done AS (SELECT key, delete_reason, deleted_at IS NULL AS first FROM media_uploads
                             WHERE key = ANY ($1::text[]) FOR UPDATE),
                    dropped AS (DELETE FROM media_uploads u USING done
                                WHERE u.key = done.key AND u.issued_at <= $2::timestamptz - make_interval(secs => $3)
                                RETURNING u.key),
                    kept AS (UPDATE media_uploads u
                             SET deleted_at = COALESCE(u.deleted_at, $2), delete_after = u.issued_at
                                 + make_interval(secs => $3)
                             FROM done
                             WHERE u.key = done.key AND u.issued_at > $2::timestamptz - make_interval(secs => $3)
                             RETURNING u.key)
               SELECT delete_reason, count(*) AS n FROM done WHERE first GROUP BY delete_reason""",
            list(keys),
            now,
            url_seconds,
        )
    return {row["delete_reason"]: row["n"] for row in rows}


class Uploads(OnDatabase):
    """The issued keys, by use case. Safe to share between tasks; raises the store's errors."""

    async def issue(self, key: str, user_id: UUID, content_type: str, size: int, now: datetime) -> None:
        """Unauthorized when the user does not exist (any more)."""
        if not await self.database.call(aio_issue_upload, key, user_id, content_type, size, now):
            raise UserGone()

    issue_once = Query(aio_issue_upload_once)
    reissue = Query(aio_reissue_upload)
    claim_due = Query(aio_claim_due)
    forget_deleted = Query(aio_forget_deleted)
    claim_uncopied = Query(aio_claim_uncopied)
    forget_copied = Query(aio_forget_copied)
