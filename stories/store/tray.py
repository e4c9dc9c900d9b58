"""The SQL of the tray and of an author's stories (API.md "The tray ... and an author's stories").

Same rules as all the store: asyncio coroutines named `aio_*`, the pool first, one statement each, frozen records
out. The tray reads `feed_stories`, the feed's own definition of what a feed holds, so whatever the feed leaves
out (visibility, blocks, mutes, and any rule added there later) the tray leaves out too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from stories.store.models import TrayStory
from stories.store.stories import STORY_COLUMNS as _STORY_COLUMNS
from stories.store.stories import feed_stories
from stories.store.stories import story_from_row as _story
from stories.store.visibility import VISIBLE as _VISIBLE

if TYPE_CHECKING:
    import asyncpg

__all__ = ["MAX_GROUP", "TRAY_SQL", "TrayRank", "TrayRead", "aio_author_stories", "aio_tray"]

# Stories per author in the tray and on an author's list: their newest ones (API.md: "at most 100").
MAX_GROUP = 100

# The parts of the tray's order (API.md): the caller's own group, authors with an unseen story, the rest.
OWN, UNSEEN, SEEN = 0, 1, 2


def _of_author(author: str) -> str:
    """`feed_stories` of one author (`author`: an outer column), newest first, at most $4 rows: each branch is an
    index range of that author (or nothing), so this costs a few index probes, never the feed's size."""
    order = "ORDER BY s.created_at DESC, s.id DESC LIMIT $4"
    return f"""(SELECT f.* FROM ({feed_stories("", order, author)}) f
                ORDER BY f.created_at DESC, f.id DESC LIMIT $4)"""


def _newest(author: str, started: bool = False) -> str:
    """The newest story of `author` (an outer column) in `feed_stories`, created by the walk's start $3 when
    `started`, as (id, created_at); no row when there is none. A walk down the author's live stories in
    stories_author_feed_idx, newest first, asking `feed_stories` narrowed to each one (primary-key probes) whether
    the feed holds it, stopping at the first it does: usually the first, so the cost of placing an author does
    not grow with their number of stories. (`_of_author` with LIMIT 1 did: below ~100 live stories per author the
    planner read them all and sorted; with a costly filter per story it keeps the ordered scan: bench/feed_plans.md
    "Tray at scale".)"""
    before = "AND c.created_at <= $3" if started else ""
    return f"""(SELECT c.id, c.created_at FROM stories c
                WHERE c.author_id = {author} AND c.deleted_at IS NULL {before}
                  AND EXISTS (SELECT 1 FROM ({feed_stories("AND s.id = c.id", "", author)}) f)
                ORDER BY c.created_at DESC, c.id DESC LIMIT 1)"""


def _part(author: str, latest: str, newest: str, newest_at: str) -> str:
    """The part of the order of `author` whose latest story (as of the walk's start $3) is `latest`: unseen when
    one of their newest $4 stories, created by the start (all of them, if none was), has no view recorded by the
    start. Usually their newest story (id `newest`, created at `newest_at`) answers it: one probe of story_views.
    Else their newest $4 are read newest first until an unseen one."""
    return f"""CASE WHEN {author} = $1 THEN {OWN}
                    WHEN {newest_at} <= $3 AND NOT EXISTS (
                        SELECT 1 FROM story_views v WHERE v.story_id = {newest} AND v.viewer_id = $1
                                                      AND v.viewed_at <= $3) THEN {UNSEEN}
                    WHEN EXISTS (
                        SELECT 1 FROM {_of_author(author)} t
                        WHERE t.created_at <= (CASE WHEN {latest} <= $3 THEN $3 ELSE 'infinity' END)
                          AND NOT EXISTS (SELECT 1 FROM story_views v WHERE v.story_id = t.id AND v.viewer_id = $1
                                                                       AND v.viewed_at <= $3)) THEN {UNSEEN}
                    ELSE {SEEN} END"""


# The page of the tray of viewer $1 at $2 for a walk that began at $3 (stories/tray.py has the order's rules):
# the $8 authors after the place ($5, $6, $7) (`kind` 'a', with their part and latest_at), and their newest $4
# stories with the viewer's views (`kind` 's'), in one round trip, without reading the whole feed:
#
# followed: the viewer and their followees (every author with friends stories in the feed).
# walked: every other author has only public stories in the feed; the unseen ones after the cursor come in
#   order from a walk down stories_public_feed_idx from the cursor's latest_at ($9): a story stands for its
#   author when it is their latest feed story by the start (so each comes once), and the walk stops after $8.
# known: the followed, and, when the walk leaves room on the page, the authors of stories the viewer viewed
#   (every other author of the seen part is among them). Each is placed by a few index probes of `feed_stories`
#   narrowed to them: their newest story, the latest by the start, and their part. MATERIALIZED: inlined, each
#   reference to `part` and `latest_at` below (the filter, the key, the order, the output) got its own copy of
#   their subqueries, planned and run again (twice the plan, and the probes run up to five times per author).
# The key is stories/tray.py's: (part, -latest_at in microseconds, author id), the own group (0, 0, nil).
TRAY_SQL = f"""
    WITH followed (author_id) AS (
        SELECT $1::uuid UNION SELECT f.followee_id FROM follows f WHERE f.follower_id = $1),
    walked AS (
        SELECT w.author_id, w.created_at AS latest_at, {UNSEEN} AS part
        FROM stories w
        WHERE w.visibility = 'public' AND w.deleted_at IS NULL
          AND w.created_at <= (CASE WHEN $5 = {UNSEEN} THEN least($9::timestamptz, $3::timestamptz) ELSE $3 END)
          AND $5 <= {UNSEEN}
          AND ($5 < {UNSEEN} OR w.created_at < $9 OR w.author_id > $7)
          AND w.author_id NOT IN (SELECT author_id FROM followed)
          AND w.id = (SELECT o.id FROM {_newest("w.author_id", started=True)} o)
          AND {_part("w.author_id", "w.created_at", "w.id", "w.created_at")} = {UNSEEN}
        ORDER BY w.created_at DESC FETCH FIRST $8 ROWS WITH TIES),
    known (author_id, followed) AS (
        SELECT author_id, true FROM followed
        UNION ALL
        SELECT DISTINCT v.author_id, false FROM story_views v
        WHERE v.viewer_id = $1 AND v.author_id NOT IN (SELECT author_id FROM followed)
          AND (SELECT count(*) FROM walked) < $8
          AND (SELECT s.deleted_at IS NULL AND s.expires_at > $2 FROM stories s WHERE s.id = v.story_id)),
    placed AS MATERIALIZED (
        SELECT k.author_id, k.followed, l.latest_at,
               {_part("k.author_id", "l.latest_at", "l.id", "l.created_at")} AS part
        FROM known k CROSS JOIN LATERAL (
            SELECT n.id, n.created_at, CASE
                WHEN n.created_at <= $3 THEN n.created_at
                ELSE coalesce((SELECT o.created_at FROM {_newest("k.author_id", started=True)} o), n.created_at)
                END AS latest_at
            FROM {_newest("k.author_id")} n) l),
    keyed AS (
        SELECT p.*,
               CASE WHEN p.part = {OWN} THEN 0
                    ELSE -(extract(epoch FROM p.latest_at) * 1000000)::bigint END AS neg_latest,
               CASE WHEN p.part = {OWN} THEN '00000000-0000-0000-0000-000000000000'::uuid
                    ELSE p.author_id END AS tie
        FROM (SELECT author_id, latest_at, part FROM placed WHERE followed OR part = {SEEN}
              UNION ALL SELECT * FROM walked) p),
    page AS (
        SELECT k.author_id, k.part, k.latest_at,
               (SELECT u.display_name FROM users u WHERE u.id = k.author_id) AS display_name
        FROM keyed k
        WHERE (k.part, k.neg_latest, k.tie) > ($5, $6, $7)
        ORDER BY k.part, k.neg_latest, k.tie LIMIT $8)
    SELECT 'a' AS kind, g.author_id, g.part, g.latest_at,
           NULL::uuid AS id, NULL::text AS text, NULL::text AS media_key, NULL::text AS visibility,
           NULL::timestamptz AS created_at, NULL::timestamptz AS expires_at, NULL::integer AS view_count,
           NULL::integer AS reaction_count, NULL::text AS author_name, NULL::timestamptz AS viewed_at
    FROM page g
    UNION ALL
    SELECT 's', g.author_id, NULL, NULL,
           st.id, st.text, st.media_key, st.visibility, st.created_at, st.expires_at, st.view_count,
           st.reaction_count, g.display_name,
           (SELECT v.viewed_at FROM story_views v WHERE v.story_id = st.id AND v.viewer_id = $1)
    FROM page g CROSS JOIN LATERAL {_of_author("g.author_id")} st"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

# The author $3 (None when unknown or in a block with the viewer $1, either way) and their newest $4 stories the
# viewer may see at $2, oldest first. `FROM author LEFT JOIN LATERAL`: an author without stories is one row of
# NULLs, told apart from a missing author in the same round trip.
AUTHOR_STORIES_SQL = f"""
    WITH author AS (
        SELECT u.id, u.display_name FROM users u
        WHERE u.id = $3
          AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = $1 AND b.blocked_id = $3)
          AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = $3 AND b.blocked_id = $1))
    SELECT st.*, a.display_name AS author_name,
           (SELECT v.viewed_at FROM story_views v WHERE v.story_id = st.id AND v.viewer_id = $1) AS viewed_at
    FROM author a LEFT JOIN LATERAL (
        SELECT {_STORY_COLUMNS} FROM stories s
        WHERE s.author_id = a.id AND {_VISIBLE}
        ORDER BY s.created_at DESC, s.id DESC LIMIT $4) st ON true
    ORDER BY st.created_at, st.id"""


@dataclass(frozen=True, slots=True)
class TrayRank:
    """An author of a tray page, placed for the walk the read was made for."""

    author_id: UUID
    part: int
    latest_at: datetime  # of their stories created by the walk's start (of all, if none was)


@dataclass(frozen=True, slots=True)
class TrayRead:
    """The authors of a tray page in order, and their stories (the newest MAX_GROUP each, unordered)."""

    ranks: list[TrayRank]
    stories: list[TrayStory]


async def aio_tray(
    pool: asyncpg.Pool,
    viewer_id: UUID,
    now: datetime,
    start: datetime,
    after: tuple[int, int, UUID] | None,
    authors: int,
) -> TrayRead:
    """The `authors` first authors of the viewer's tray at `now` after the place `after` (stories/tray.py's key,
    the author as a UUID; from the first when None), for a walk that began at `start`, with their stories. One
    query."""
    part, neg, author = (-1, 0, UUID(int=0)) if after is None else after
    latest = _EPOCH - neg * _MICRO if part == UNSEEN else start
    async with pool.acquire() as conn:
        rows = await conn.fetch(TRAY_SQL, viewer_id, now, start, MAX_GROUP, part, neg, author, authors, latest)
    ranks = []
    stories = []
    for row in rows:
        if row["kind"] == "a":
            ranks.append(TrayRank(row["author_id"], row["part"], row["latest_at"]))
        else:
            stories.append(TrayStory(_story(row), row["viewed_at"]))
    return TrayRead(ranks, stories)


async def aio_author_stories(
    pool: asyncpg.Pool, viewer_id: UUID, now: datetime, author_id: UUID
) -> list[TrayStory] | None:
    """The author's newest MAX_GROUP stories the viewer may see, oldest first; None when the author is unknown
    or a block stands between the two. One query."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(AUTHOR_STORIES_SQL, viewer_id, now, author_id, MAX_GROUP)
    if not rows:
        return None
    return [TrayStory(_story(row), row["viewed_at"]) for row in rows if row["id"] is not None]
