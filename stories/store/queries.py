"""The use cases' SQL, as asyncio coroutines run by asyncpg on the bridge's loop.

No trio imports here: every function is named `aio_*`, takes the pool first, runs all its statements on one
connection (in a transaction where it writes) and returns frozen records. `Store` runs each through the bridge
exactly once (stories/store/bridge.py). Migrations live in migrate.py, the seed's bulk loader in stories/seed.py.
"""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager, nullcontext
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from stories.errors import ApiError, IdempotencyKeyReused, InvalidRequest, MediaNotUploaded, NotFound, Unauthorized
from stories.store.models import (
    FeedCursor,
    Follow,
    IdempotencyClaim,
    Reaction,
    Replay,
    Stats,
    Story,
    User,
    View,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection, Sequence
    from datetime import datetime
    from uuid import UUID

    from asyncpg.pool import PoolConnectionProxy

    from stories.store.uploads import UploadClaim

# Advisory lock ids: any constants work as long as every process uses the same ones.
EXPIRY_LOCK_ID = 0x5701_1E6
IDEMPOTENCY_TTL_SECONDS = 86_400


# The foreign keys that name the caller of a write. A violation means the token's user does not exist (any
# more): that is a 401, never a 500. (The auth hook's user cache refuses such tokens first; this is the net.)
_CALLER_FOREIGN_KEYS = frozenset(
    {
        "stories_author_id_fkey",
        "story_views_viewer_id_fkey",
        "reactions_user_id_fkey",
        "follows_follower_id_fkey",
        "idempotency_keys_user_id_fkey",
        "blocks_blocker_id_fkey",
        "mutes_muter_id_fkey",
        "reports_reporter_id_fkey",
        "report_cases_resolved_by_fkey",
        "moderation_audit_actor_id_fkey",
    }
)


_NO_SUCH_USER = "no such user"
_NO_SUCH_STORY = "no such story (it may have expired, or is not visible to you)"
# The foreign keys that name what a write is about. The write read its target first, so a violation means the
# target was deleted while the write ran (an account deletion, a retention purge): answered as for a target that
# never existed, never a 500.
_TARGET_FOREIGN_KEYS: dict[str, Callable[[], ApiError]] = {
    "follows_followee_id_fkey": lambda: NotFound(_NO_SUCH_USER),
    "blocks_blocked_id_fkey": lambda: NotFound(_NO_SUCH_USER),
    "mutes_muted_id_fkey": lambda: NotFound(_NO_SUCH_USER),
    "story_views_story_id_fkey": lambda: NotFound(_NO_SUCH_STORY),
    "reactions_story_id_fkey": lambda: NotFound(_NO_SUCH_STORY),
    "story_audience_user_id_fkey": lambda: InvalidRequest(
        "audience_user_ids: a user of the audience no longer exists",
        fields={"audience_user_ids": "a user no longer exists"},
    ),
}


@asynccontextmanager
async def _caller_exists() -> AsyncIterator[None]:
    try:
        yield
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name in _CALLER_FOREIGN_KEYS:
            raise Unauthorized("the token's user does not exist; sign up or log in again") from exc
        target_gone = _TARGET_FOREIGN_KEYS.get(exc.constraint_name or "")
        if target_gone is not None:
            raise target_gone() from exc
        raise


async def aio_existing_users(pool: asyncpg.Pool, user_ids: Collection[UUID]) -> set[UUID]:
    """Which of these users exist."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[])", list(user_ids))
    return {row["id"] for row in rows}


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], email=row["email"], password_hash=row["password_hash"], created_at=row["created_at"])


async def aio_create_user(
    pool: asyncpg.Pool, user_id: UUID, email: str, password_hash: str, now: datetime, display_name: str | None
) -> User | None:
    """Insert a user; None when the email is taken (the unique index decides, so races are safe)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO users (id, email, password_hash, created_at, display_name) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (email) DO NOTHING
               RETURNING id, email, password_hash, created_at""",
            user_id,
            email,
            password_hash,
            now,
            display_name,
        )
    return None if row is None else _user(row)


async def aio_user_by_email(pool: asyncpg.Pool, email: str) -> User | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT id, email, password_hash, created_at FROM users WHERE email = $1", email)
    return None if row is None else _user(row)


# --- stories -------------------------------------------------------------------------------------------

_STORY_COLUMNS = (
    "s.id, s.author_id, s.text, s.media_key, s.visibility, s.created_at, s.expires_at, s.view_count, s.reaction_count"
)

# The author's display name, read by primary key for each story returned (never for the candidates a feed drops).
_AUTHOR_NAME = "(SELECT u.display_name FROM users u WHERE u.id = s.author_id) AS author_name"

# What every read of stories asks of a story besides who may see it, for reader $1 at instant $2: the ONE place
# that says it (point reads through _VISIBLE; the feed's and the tray's three branches through feed_stories).
# Live (not deleted, not expired), and what moderation hides (API.md "Reports and moderation"):
# a story the reader reported, a story held for review (REPORT_HIDE_THRESHOLD reporters) from all but its author,
# and every story of a suspended author. The two lists are uncorrelated, so PostgreSQL reads each once per query
# and probes a hash of it (`NOT IN (hashed SubPlan)`): the reader's reports by reports_story_once_idx, the
# suspended users by users_suspended_idx (only they are in it). Neither holds NULLs, so NOT IN is safe.
READABLE = """
    s.deleted_at IS NULL AND s.expires_at > $2
    AND s.id NOT IN (SELECT r.story_id FROM reports r WHERE r.reporter_id = $1 AND r.target_type = 'story')
    AND (s.held_at IS NULL OR s.author_id = $1)
    AND s.author_id NOT IN (SELECT u.id FROM users u WHERE u.suspended_at IS NOT NULL)
"""

# Who may see an active story (API.md "Visibility rules"), for viewer $1 at instant $2. Used by every read.
# A block either way hides every story of the pair (two primary-key probes of `blocks`).
_VISIBLE = f"""
    {READABLE} AND (
        s.author_id = $1
        OR s.visibility = 'public'
        OR (s.visibility = 'friends'
            AND EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = s.author_id)
            AND (NOT s.has_audience
                 OR EXISTS (SELECT 1 FROM story_audience a WHERE a.story_id = s.id AND a.user_id = $1))))
    AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = s.author_id AND b.blocked_id = $1)
    AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = $1 AND b.blocked_id = s.author_id)
"""

# The author of story $3 when reader $1 may see it at $2 (a report's target check).
VISIBLE_AUTHOR_SQL = f"SELECT s.author_id FROM stories s WHERE s.id = $3 AND {_VISIBLE}"

# The users whose stories the feed of viewer $1 leaves out: blocked by them, blocking them, muted by them.
# Uncorrelated, so PostgreSQL runs it once per query and probes a hash of it (`NOT IN (hashed SubPlan)`): three
# index lookups per page, whatever the number of candidate stories. Ids are never NULL, so NOT IN is safe.
HIDDEN_FROM_FEED = """(
    SELECT b.blocked_id FROM blocks b WHERE b.blocker_id = $1
    UNION ALL SELECT b.blocker_id FROM blocks b WHERE b.blocked_id = $1
    UNION ALL SELECT m.muted_id FROM mutes m WHERE m.muter_id = $1)"""


def pair_lock(a: UUID, b: UUID) -> int:
    """The advisory lock of an unordered pair of users, taken by follows and blocks between them: a follow
    then either commits before a block (and the block removes it) or sees the block. A collision only
    serializes two unrelated pairs for a moment."""
    low, high = sorted((a, b))
    return int.from_bytes(hashlib.blake2b(low.bytes + high.bytes, digest_size=8).digest(), "big", signed=True)


def _story(row: asyncpg.Record) -> Story:
    return Story(
        id=row["id"],
        author_id=row["author_id"],
        text=row["text"],
        media_key=row["media_key"],
        visibility=row["visibility"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        view_count=row["view_count"],
        reaction_count=row["reaction_count"],
        author_name=row["author_name"],
    )


async def aio_idempotent_replay(
    pool: asyncpg.Pool, user_id: UUID, claim: IdempotencyClaim[Any], now: datetime
) -> Replay | None:
    """The stored response for this key and body when the key is held (< 24 h); IdempotencyKeyReused when it is
    held for another body; None when it is free. Read before the rate limit, so a retry never costs a token."""
    async with pool.acquire() as conn:
        held = await conn.fetchrow(
            """SELECT request_hash, response FROM idempotency_keys
               WHERE user_id = $1 AND key = $2 AND created_at > $3::timestamptz - make_interval(secs => $4)""",
            user_id,
            claim.key,
            now,
            IDEMPOTENCY_TTL_SECONDS,
        )
    return None if held is None else _replay(held, claim)


def _replay(held: asyncpg.Record, claim: IdempotencyClaim[Any]) -> Replay:
    if held["request_hash"] != claim.request_hash:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return Replay(response=held["response"])


async def aio_claim_idempotency_key(
    conn: PoolConnectionProxy[asyncpg.Record],
    user_id: UUID,
    claim: IdempotencyClaim[Any],
    now: datetime,
    response: bytes | None = None,
) -> Replay | None:
    """Claim the key inside the caller's transaction: None when it is the caller's now (new, or older than
    24 h); a Replay when a request with the same hash holds it; IdempotencyKeyReused for another hash.

    A concurrent request with the same key blocks on the key's primary key until this transaction ends, then
    reads its response: exactly one of them creates anything. Without `response` here, the caller stores it
    with `aio_keep_response` once it has created what the response shows, in the same transaction.
    """
    claimed = await conn.fetchval(
        """INSERT INTO idempotency_keys (user_id, key, request_hash, response, created_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, key) DO UPDATE
               SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
                   created_at = EXCLUDED.created_at
               WHERE idempotency_keys.created_at <= $5 - make_interval(secs => $6)
           RETURNING true""",
        user_id,
        claim.key,
        claim.request_hash,
        response,
        now,
        IDEMPOTENCY_TTL_SECONDS,
    )
    if claimed:
        return None
    held = await conn.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE user_id = $1 AND key = $2", user_id, claim.key
    )
    if held is None:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return _replay(held, claim)


async def aio_keep_response(
    conn: PoolConnectionProxy[asyncpg.Record], user_id: UUID, claim: IdempotencyClaim[Any], response: bytes
) -> None:
    """Store the response of a key claimed in this transaction by `aio_claim_idempotency_key`."""
    await conn.execute(
        "UPDATE idempotency_keys SET response = $3 WHERE user_id = $1 AND key = $2", user_id, claim.key, response
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
    async with pool.acquire() as conn, _caller_exists(), conn.transaction() if atomic else nullcontext():
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
    from stories.store.uploads import aio_attach_upload  # uploads.py imports this module's lock id

    if not await aio_attach_upload(conn, upload.key, story.author_id, story.id, story.created_at):
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
            f"SELECT {_STORY_COLUMNS}, {_AUTHOR_NAME} FROM stories s WHERE s.id = $3 AND {_VISIBLE}",
            viewer_id,
            now,
            story_id,
        )
    return None if row is None else _story(row)


def feed_stories(after: str = "", order: str = "") -> str:
    """What the feed of viewer $1 at instant $2 holds: the one definition the feed and the tray both read.

    Three disjoint index-ordered branches (no DISTINCT needed), each filtered by `after` and ordered/bounded by
    `order` when given:
    public: live public stories (stories_public_feed_idx) of authors not hidden from the viewer;
    own: the viewer's non-public stories (stories_author_feed_idx);
    friends: per followee not hidden from the viewer, their friends stories (stories_friends_feed_idx),
    audience-checked. (A block removes the follows between the pair, so the friends branch would drop blocked
    authors anyway; the check there is one probe per followee and keeps the rule in one place.)
    """
    live = f"{READABLE} {after}"
    return f"""
                (SELECT {_STORY_COLUMNS} FROM stories s
                  WHERE s.visibility = 'public' AND {live} AND s.author_id NOT IN {HIDDEN_FROM_FEED} {order})
                UNION ALL
                (SELECT {_STORY_COLUMNS} FROM stories s
                  WHERE s.author_id = $1 AND s.visibility <> 'public' AND {live} {order})
                UNION ALL
                (SELECT fs.* FROM follows f CROSS JOIN LATERAL (
                    SELECT {_STORY_COLUMNS} FROM stories s
                     WHERE s.author_id = f.followee_id AND s.visibility = 'friends' AND {live}
                       AND (NOT s.has_audience
                            OR EXISTS (SELECT 1 FROM story_audience a WHERE a.story_id = s.id AND a.user_id = $1))
                     {order}) fs
                  WHERE f.follower_id = $1 AND f.followee_id NOT IN {HIDDEN_FROM_FEED})"""


def _feed_sql(with_cursor: bool) -> str:
    """The feed: `feed_stories`, each branch bounded by the page size ($3), merged by one sort.

    Keyset: ($4, $5) is the last (created_at, id) served. The page's authors' display names are read last, by
    primary key, for the `$3` stories served only.
    """
    after = "AND (s.created_at, s.id) < ($4, $5)" if with_cursor else ""
    order = "ORDER BY s.created_at DESC, s.id DESC LIMIT $3"
    return f"""
        SELECT s.*, {_AUTHOR_NAME} FROM (
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
    return [_story(row) for row in rows]


async def aio_record_view(pool: asyncpg.Pool, viewer_id: UUID, now: datetime, story_id: UUID) -> View | None:
    """Record the first view of a visible story; later views return the original. None when not visible.

    One statement. The author's own views are not recorded (first_view false, viewed_at now). The story's
    view_count is not touched here: the counter flusher recounts touched stories once per tick, so a viral
    story's row is never a lock every viewer queues on.
    """
    async with pool.acquire() as conn, _caller_exists():
        row = await conn.fetchrow(
            f"""WITH target AS (SELECT s.id, s.author_id FROM stories s WHERE s.id = $3 AND {_VISIBLE}),
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
    WITH target AS (SELECT s.id, s.author_id FROM stories s WHERE s.id = $3 AND {_VISIBLE}),
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
    async with pool.acquire() as conn, _caller_exists():
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


# --- social graph --------------------------------------------------------------------------------------


async def aio_follow(pool: asyncpg.Pool, follower_id: UUID, followee_id: UUID, now: datetime) -> Follow | None:
    """Follow (idempotent: the original follow is returned). None when the followee does not exist or a block
    stands between the two, either way (API.md: as for an unknown user).

    Under the pair's lock (see `pair_lock`), so a concurrent block either removes this follow or is seen by
    it; the statement after the lock reads with a snapshot taken after any block that held it committed, and
    after any concurrent follow of the same pair, so the original follow is always found.
    """
    async with pool.acquire() as conn, _caller_exists(), conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", pair_lock(follower_id, followee_id))
        row = await conn.fetchrow(
            """WITH target AS (SELECT u.id FROM users u WHERE u.id = $2
                                 AND NOT EXISTS (SELECT 1 FROM blocks b
                                                 WHERE (b.blocker_id = $1 AND b.blocked_id = $2)
                                                    OR (b.blocker_id = $2 AND b.blocked_id = $1))),
                    added AS (INSERT INTO follows (follower_id, followee_id, created_at)
                              SELECT $1, id, $3 FROM target
                              ON CONFLICT (follower_id, followee_id) DO NOTHING
                              RETURNING created_at)
               SELECT (SELECT created_at FROM added) AS added,
                      (SELECT created_at FROM follows WHERE follower_id = $1 AND followee_id = $2) AS existing,
                      EXISTS (SELECT 1 FROM target) AS target_exists""",
            follower_id,
            followee_id,
            now,
        )
    if row is None or not row["target_exists"]:
        return None
    return Follow(follower_id, followee_id, row["added"] or row["existing"])


async def aio_unfollow(pool: asyncpg.Pool, follower_id: UUID, followee_id: UUID) -> None:
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM follows WHERE follower_id = $1 AND followee_id = $2", follower_id, followee_id)


# --- stats and expiry ----------------------------------------------------------------------------------


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


async def aio_expire_batch(pool: asyncpg.Pool, now: datetime, limit: int) -> int | None:
    """Soft-delete up to `limit` expired stories. None when another process holds the expiry lock.

    The lock is transaction-scoped, so a crashed leader frees it with its connection, and many processes
    may run the ticker safely: one of them does the work at a time.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", EXPIRY_LOCK_ID):
            return None
        # A primary-key lookup of the locked ids: as a join, the planner picked a hash join that scanned the
        # whole table (100,500 rows, 75 ms on 100k stories; 1,000 rows, 26 ms this way: bench/feed_plans.md).
        status = await conn.execute(
            """UPDATE stories SET deleted_at = $1
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
