"""The SQL of the tray and of an author's stories (API.md "The tray ... and an author's stories").

Same rules as all the store: asyncio coroutines named `aio_*`, the pool first, one statement each, frozen records
out. The tray reads `feed_stories`, the feed's own definition of what a feed holds, so whatever the feed leaves
out (visibility, blocks, mutes, and any rule added there later) the tray leaves out too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.store.models import TrayStory
from stories.store.stories import STORY_COLUMNS as _STORY_COLUMNS
from stories.store.stories import feed_stories
from stories.store.stories import story_from_row as _story
from stories.store.visibility import VISIBLE as _VISIBLE

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    import asyncpg

__all__ = ["MAX_GROUP", "TRAY_SQL", "aio_author_stories", "aio_tray"]

# Stories per author in the tray and on an author's list: their newest ones (API.md: "at most 100").
MAX_GROUP = 100

# Every story of the feed of viewer $1 at $2, at most the $3 newest per author, with the author's display name
# and the viewer's view of it: the viewer's views are one range of story_views_viewer_idx (schema/0014), hashed,
# not a probe per story. Grouping and order are the caller's (stories/tray.py): they depend on views the cache
# overlays, which this statement cannot know.
TRAY_SQL = f"""
    SELECT s.*, u.display_name AS author_name, v.viewed_at
    FROM (SELECT feed.*,
                 row_number() OVER (PARTITION BY feed.author_id ORDER BY feed.created_at DESC, feed.id DESC) AS rank
          FROM ({feed_stories()}) feed) s
    JOIN users u ON u.id = s.author_id
    LEFT JOIN (SELECT story_id, viewed_at FROM story_views WHERE viewer_id = $1) v ON v.story_id = s.id
    WHERE s.rank <= $3"""

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


async def aio_tray(pool: asyncpg.Pool, viewer_id: UUID, now: datetime) -> list[TrayStory]:
    """The stories of the viewer's tray (at most MAX_GROUP per author), in no particular order. One query."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(TRAY_SQL, viewer_id, now, MAX_GROUP)
    return [TrayStory(_story(row), row["viewed_at"]) for row in rows]


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
