"""The trio-facing store: one coarse method per use case, each one `Database.call` (one bridge crossing).

The SQL is in queries.py; the pool, its deadline and error translation in database.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.store import queries

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime
    from uuid import UUID

    from stories.store.database import Database
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
    from stories.store.uploads import UploadClaim

__all__ = ["Store"]


class Store:
    """PostgreSQL, the single source of truth, by use case. Safe to share between tasks; every method is
    cancellable and raises the domain's errors (StoreUnavailable, Overloaded, Unauthorized ...), never
    asyncpg's."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def ping(self) -> None:
        await self.database.ping()

    async def create_user(self, user_id: UUID, email: str, password_hash: str, now: datetime) -> User | None:
        return await self.database.call(queries.aio_create_user, user_id, email, password_hash, now)

    async def user_by_email(self, email: str) -> User | None:
        return await self.database.call(queries.aio_user_by_email, email)

    async def existing_users(self, user_ids: Collection[UUID]) -> set[UUID]:
        return await self.database.call(queries.aio_existing_users, user_ids)

    async def idempotent_replay(self, user_id: UUID, claim: IdempotencyClaim, now: datetime) -> Replay | None:
        """The original response when this key was used with this body (< 24 h); IdempotencyKeyReused when it
        was used with another body; None when it is free."""
        return await self.database.call(queries.aio_idempotent_replay, user_id, claim, now)

    async def create_story(
        self, story: Story, audience: Sequence[UUID], claim: IdempotencyClaim | None, upload: UploadClaim | None = None
    ) -> Replay | None:
        """Create a story (+audience, +its upload key) atomically; a Replay when the Idempotency-Key was already
        used with this body. Raises IdempotencyKeyReused, InvalidRequest (unknown audience users, a media key
        not issued to the author or used), MediaNotUploaded."""
        return await self.database.call(queries.aio_create_story, story, audience, claim, upload)

    async def visible_story(self, viewer_id: UUID, now: datetime, story_id: UUID) -> Story | None:
        return await self.database.call(queries.aio_visible_story, viewer_id, now, story_id)

    async def feed(self, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None) -> list[Story]:
        return await self.database.call(queries.aio_feed, viewer_id, now, limit, cursor)

    async def record_view(self, viewer_id: UUID, now: datetime, story_id: UUID) -> View | None:
        return await self.database.call(queries.aio_record_view, viewer_id, now, story_id)

    async def add_reaction(
        self, user_id: UUID, now: datetime, story_id: UUID, reaction_id: UUID, emoji: str
    ) -> Reaction | None:
        return await self.database.call(queries.aio_add_reaction, user_id, now, story_id, reaction_id, emoji)

    async def recount(self, story_ids: Sequence[UUID]) -> None:
        """Set these stories' view and reaction counters from their rows (idempotent)."""
        await self.database.call(queries.aio_recount, story_ids)

    async def follow(self, follower_id: UUID, followee_id: UUID, now: datetime) -> Follow | None:
        return await self.database.call(queries.aio_follow, follower_id, followee_id, now)

    async def unfollow(self, follower_id: UUID, followee_id: UUID) -> None:
        await self.database.call(queries.aio_unfollow, follower_id, followee_id)

    async def stats(self, author_id: UUID, since: datetime) -> Stats:
        return await self.database.call(queries.aio_stats, author_id, since)

    async def expire_batch(self, now: datetime, limit: int) -> int | None:
        """Soft-delete up to `limit` expired stories; None when another process is the expiry leader."""
        return await self.database.call(queries.aio_expire_batch, now, limit)

    async def recount_since(self, since: datetime) -> int | None:
        """Recount stories viewed or reacted to after `since`; None when another process is the leader."""
        return await self.database.call(queries.aio_recount_since, since)

    async def purge_stories(self, before: datetime, limit: int) -> int | None:
        """Delete for good up to `limit` stories soft-deleted before `before`; None when not the leader."""
        return await self.database.call(queries.aio_purge_stories, before, limit)

    async def purge_idempotency_keys(self, before: datetime, limit: int) -> int | None:
        """Delete up to `limit` idempotency keys claimed before `before`; None when not the leader."""
        return await self.database.call(queries.aio_purge_idempotency_keys, before, limit)
