"""Post-commit effects: what a write must tell the caches, the counters and the relay once it has committed.

A write declares its effects before it calls the store, inside `after_commit(app)`; they are applied when the
block ends, however it ends: normally, with an error, or cancelled (a deadline or a client that left, possibly
after the transaction committed: its outcome is unknown, so the effects are applied anyway). Every effect is
safe to apply when nothing was committed: a feed-cache version bump costs a cache miss, a counter touch a
recount, a wake a read of the log. The asynchronous ones (the feed cache talks to Redis) run shielded, bounded
by EFFECTS_SECONDS: they are the cleanup of the commit, and a cancel must not skip them (blocks and deletes
would stay visible in cached feeds).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from uuid import UUID

    from stories.api.deps import AppDeps

__all__ = ["EFFECTS_SECONDS", "Effects", "after_commit"]

log = structlog.get_logger()

# The feed cache's Redis calls are bounded by the link's own io timeout; this bounds the whole set.
EFFECTS_SECONDS = 2.0


@dataclass(slots=True)
class Effects:
    """The effects one write declares (see the module docstring); `after_commit` applies them."""

    feeds_changed: list[UUID] = field(default_factory=list)
    stories_deleted: list[tuple[UUID, UUID]] = field(default_factory=list)
    counters_touched: list[UUID] = field(default_factory=list)
    events: bool = False

    def feed_changed(self, *user_ids: UUID) -> None:
        """What these users may see changed (a follow, a block, their own new story...)."""
        self.feeds_changed.extend(user_ids)

    def story_deleted(self, author_id: UUID, story_id: UUID) -> None:
        self.stories_deleted.append((author_id, story_id))

    def counters_changed(self, story_id: UUID) -> None:
        """A view or reaction of this story may have been recorded: recount it."""
        self.counters_touched.append(story_id)

    def wake_relay(self) -> None:
        """A view or reaction may have been recorded: the event is in the log, read it now."""
        self.events = True

    def discard(self) -> None:
        """The store answered that it changed nothing (a repeat view, a story not the caller's): no effects."""
        self.feeds_changed.clear()
        self.stories_deleted.clear()
        self.counters_touched.clear()
        self.events = False


@asynccontextmanager
async def after_commit(app: AppDeps) -> AsyncIterator[Effects]:
    """Yield the write's Effects; apply them when the block ends, whatever ends it."""
    effects = Effects()
    try:
        yield effects
    finally:
        for story_id in effects.counters_touched:
            app.counters.touch(story_id)
        if effects.events:
            app.relay.wake()
        if effects.feeds_changed or effects.stories_deleted:
            with trio.move_on_after(EFFECTS_SECONDS, shield=True) as bounded:
                for author_id, story_id in effects.stories_deleted:
                    await app.feeds.story_deleted(author_id, story_id)
                if effects.feeds_changed:
                    await app.feeds.changed(*effects.feeds_changed)
            if bounded.cancelled_caught:
                log.warning("effects.timeout", seconds=EFFECTS_SECONDS)
