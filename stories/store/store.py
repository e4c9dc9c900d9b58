"""The trio-facing store: one coarse operation per use case, each one `Database.call` (one bridge crossing).

Each operation is declared `Query(aio_fn)` (database.py): its signature and docstring are the `aio_*` function's, in
one module per topic beside this one (users, stories, engagement, social_graph, idempotency, housekeeping,
moderation, tray); the pool, its deadline and error translation are in database.py.
"""

from __future__ import annotations

from stories.store import engagement, housekeeping, idempotency, moderation, social_graph, stories, users
from stories.store import tray as tray_queries  # `tray` is also one of Store's operations
from stories.store.database import OnDatabase, Query

__all__ = ["Store"]


class Store(OnDatabase):
    """PostgreSQL, the single source of truth, by use case. Safe to share between tasks; every operation is
    cancellable and raises the domain's errors (StoreUnavailable, Overloaded, Unauthorized ...), never
    asyncpg's."""

    async def ping(self) -> None:
        await self.database.ping()

    create_user = Query(users.aio_create_user)
    user_by_email = Query(users.aio_user_by_email)
    existing_users = Query(users.aio_existing_users)
    idempotent_replay = Query(idempotency.aio_idempotent_replay)
    create_story = Query(stories.aio_create_story)
    visible_story = Query(stories.aio_visible_story)
    feed = Query(stories.aio_feed)
    tray = Query(tray_queries.aio_tray)
    author_stories = Query(tray_queries.aio_author_stories)
    record_view = Query(engagement.aio_record_view)
    add_reaction = Query(engagement.aio_add_reaction)
    recount = Query(engagement.aio_recount)
    follow = Query(social_graph.aio_follow)
    unfollow = Query(social_graph.aio_unfollow)
    stats = Query(engagement.aio_stats)
    expire_batch = Query(housekeeping.aio_expire_batch)
    recount_since = Query(housekeeping.aio_recount_since)
    purge_stories = Query(housekeeping.aio_purge_stories)
    purge_idempotency_keys = Query(housekeeping.aio_purge_idempotency_keys)

    # --- profiles, follow lists, blocks, mutes, a story's author ---------------------------------------------

    me = Query(users.aio_me)
    set_display_name = Query(users.aio_set_display_name)
    profile = Query(users.aio_profile)
    followers = Query(social_graph.aio_followers)
    following = Query(social_graph.aio_following)
    block = Query(social_graph.aio_block)
    unblock = Query(social_graph.aio_unblock)
    blocks = Query(social_graph.aio_blocks)
    mute = Query(social_graph.aio_mute)
    unmute = Query(social_graph.aio_unmute)
    mutes = Query(social_graph.aio_mutes)
    delete_story = Query(stories.aio_delete_story)
    viewers = Query(engagement.aio_viewers)

    # --- reports and moderation (stories/store/moderation.py) ------------------------------------------------

    file_report = Query(moderation.aio_file_report)
    is_moderator = Query(moderation.aio_is_moderator)
    set_moderator = Query(moderation.aio_set_moderator)
    report_cases = Query(moderation.aio_report_cases)
    resolve = Query(moderation.aio_resolve)
    unsuspend = Query(moderation.aio_unsuspend)
    audit = Query(moderation.aio_audit)
    report_backlog = Query(moderation.aio_report_backlog)
