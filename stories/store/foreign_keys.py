"""Foreign-key violations of a write, translated to the domain's errors (`caller_exists`).

A write that names a user or a story that is gone (a token's user deleted, a target purged while the write ran)
violates a foreign key: that is a 401 or a 404, never a 500. Every writing `aio_*` function runs inside it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import asyncpg

from stories.errors import ApiError, InvalidRequest, NotFound, UserGone

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


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
async def caller_exists() -> AsyncIterator[None]:
    try:
        yield
    except asyncpg.ForeignKeyViolationError as exc:
        if exc.constraint_name in _CALLER_FOREIGN_KEYS:
            raise UserGone() from exc
        target_gone = _TARGET_FOREIGN_KEYS.get(exc.constraint_name or "")
        if target_gone is not None:
            raise target_gone() from exc
        raise
