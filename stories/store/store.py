"""The trio-facing store: one coarse method per use case, each one `Database.call` (one bridge crossing).

The SQL is in one module per topic beside this one (users, stories, engagement, social_graph, idempotency,
housekeeping, moderation, tray); the pool, its deadline and error translation in database.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stories.store import engagement, housekeeping, idempotency, moderation, social_graph, stories, tray, users

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence
    from datetime import datetime
    from uuid import UUID

    from stories.store.database import Database
    from stories.store.models import (
        AuditEntry,
        Backlog,
        Block,
        FeedCursor,
        Follow,
        IdempotencyClaim,
        ListedUser,
        Mute,
        Position,
        Profile,
        Reaction,
        Replay,
        Report,
        ReportCase,
        Resolution,
        Stats,
        Story,
        TrayStory,
        User,
        View,
        Viewer,
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

    async def create_user(
        self, user_id: UUID, email: str, password_hash: str, now: datetime, display_name: str | None = None
    ) -> User | None:
        return await self.database.call(users.aio_create_user, user_id, email, password_hash, now, display_name)

    async def user_by_email(self, email: str) -> User | None:
        return await self.database.call(users.aio_user_by_email, email)

    async def existing_users(self, user_ids: Collection[UUID]) -> set[UUID]:
        return await self.database.call(users.aio_existing_users, user_ids)

    async def idempotent_replay(self, user_id: UUID, claim: IdempotencyClaim[Any], now: datetime) -> Replay | None:
        """The original response when this key was used with this body (< 24 h); IdempotencyKeyReused when it
        was used with another body; None when it is free."""
        return await self.database.call(idempotency.aio_idempotent_replay, user_id, claim, now)

    async def create_story(
        self,
        story: Story,
        audience: Sequence[UUID],
        claim: IdempotencyClaim[Story] | None,
        upload: UploadClaim | None = None,
    ) -> Story | Replay:
        """Create a story (+audience, +its upload key) atomically and return it as created (with the author's
        display name); a Replay when the Idempotency-Key was already used with this body. Raises
        IdempotencyKeyReused, InvalidRequest (unknown audience users, a media key not issued to the author or
        used), MediaNotUploaded."""
        return await self.database.call(stories.aio_create_story, story, audience, claim, upload)

    async def visible_story(self, viewer_id: UUID, now: datetime, story_id: UUID) -> Story | None:
        return await self.database.call(stories.aio_visible_story, viewer_id, now, story_id)

    async def feed(self, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None) -> list[Story]:
        return await self.database.call(stories.aio_feed, viewer_id, now, limit, cursor)

    async def tray(self, viewer_id: UUID, now: datetime) -> list[TrayStory]:
        """The viewer's tray stories (the feed's, at most 100 per author) with their views, unordered."""
        return await self.database.call(tray.aio_tray, viewer_id, now)

    async def author_stories(self, viewer_id: UUID, now: datetime, author_id: UUID) -> list[TrayStory] | None:
        """The author's newest 100 stories visible to the viewer, oldest first; None: unknown or blocked."""
        return await self.database.call(tray.aio_author_stories, viewer_id, now, author_id)

    async def record_view(self, viewer_id: UUID, now: datetime, story_id: UUID) -> View | None:
        return await self.database.call(engagement.aio_record_view, viewer_id, now, story_id)

    async def add_reaction(
        self,
        user_id: UUID,
        now: datetime,
        story_id: UUID,
        reaction_id: UUID,
        emoji: str,
        claim: IdempotencyClaim[Reaction] | None = None,
    ) -> Reaction | Replay | None:
        """The reaction added (None: the story is not visible); with a claim, a Replay when the Idempotency-Key
        was already used with this body (IdempotencyKeyReused for another)."""
        return await self.database.call(engagement.aio_add_reaction, user_id, now, story_id, reaction_id, emoji, claim)

    async def recount(self, story_ids: Sequence[UUID]) -> None:
        """Set these stories' view and reaction counters from their rows (idempotent)."""
        await self.database.call(engagement.aio_recount, story_ids)

    async def follow(self, follower_id: UUID, followee_id: UUID, now: datetime) -> Follow | None:
        return await self.database.call(social_graph.aio_follow, follower_id, followee_id, now)

    async def unfollow(self, follower_id: UUID, followee_id: UUID) -> None:
        await self.database.call(social_graph.aio_unfollow, follower_id, followee_id)

    async def stats(self, author_id: UUID, since: datetime) -> Stats:
        return await self.database.call(engagement.aio_stats, author_id, since)

    async def expire_batch(self, now: datetime, limit: int) -> int | None:
        """Soft-delete up to `limit` expired stories; None when another process is the expiry leader."""
        return await self.database.call(housekeeping.aio_expire_batch, now, limit)

    async def recount_since(
        self, since: datetime, now: datetime | None = None, overlap_seconds: float = 0.0
    ) -> int | None:
        """Recount stories viewed or reacted to after `since` (and, with `now`, after where the last recount
        got: see `aio_recount_since`); None when another process is the leader."""
        return await self.database.call(housekeeping.aio_recount_since, since, now, overlap_seconds)

    async def purge_stories(self, before: datetime, limit: int) -> int | None:
        """Delete for good up to `limit` stories soft-deleted before `before`; None when not the leader."""
        return await self.database.call(housekeeping.aio_purge_stories, before, limit)

    async def purge_idempotency_keys(self, before: datetime, limit: int) -> int | None:
        """Delete up to `limit` idempotency keys claimed before `before`; None when not the leader."""
        return await self.database.call(housekeeping.aio_purge_idempotency_keys, before, limit)

    # --- profiles, follow lists, blocks, mutes, a story's author ---------------------------------------------

    async def me(self, user_id: UUID) -> Profile | None:
        return await self.database.call(users.aio_me, user_id)

    async def set_display_name(self, user_id: UUID, display_name: str | None) -> Profile:
        """The caller's profile after the change; Unauthorized when the user no longer exists."""
        return await self.database.call(users.aio_set_display_name, user_id, display_name)

    async def profile(self, reader_id: UUID, user_id: UUID) -> Profile | None:
        """None when unknown, or when the user has blocked the reader."""
        return await self.database.call(users.aio_profile, reader_id, user_id)

    async def followers(
        self, reader_id: UUID, user_id: UUID, limit: int, cursor: Position | None
    ) -> list[ListedUser] | None:
        return await self.database.call(social_graph.aio_followers, reader_id, user_id, limit, cursor)

    async def following(
        self, reader_id: UUID, user_id: UUID, limit: int, cursor: Position | None
    ) -> list[ListedUser] | None:
        return await self.database.call(social_graph.aio_following, reader_id, user_id, limit, cursor)

    async def block(self, blocker_id: UUID, blocked_id: UUID, now: datetime) -> Block | None:
        """Block, removing the follows between the two in the same transaction; None when the user is unknown."""
        return await self.database.call(social_graph.aio_block, blocker_id, blocked_id, now)

    async def unblock(self, blocker_id: UUID, blocked_id: UUID) -> None:
        await self.database.call(social_graph.aio_unblock, blocker_id, blocked_id)

    async def blocks(self, user_id: UUID, limit: int, cursor: Position | None) -> list[ListedUser]:
        return await self.database.call(social_graph.aio_blocks, user_id, limit, cursor)

    async def mute(self, muter_id: UUID, muted_id: UUID, now: datetime) -> Mute | None:
        return await self.database.call(social_graph.aio_mute, muter_id, muted_id, now)

    async def unmute(self, muter_id: UUID, muted_id: UUID) -> None:
        await self.database.call(social_graph.aio_unmute, muter_id, muted_id)

    async def mutes(self, user_id: UUID, limit: int, cursor: Position | None) -> list[ListedUser]:
        return await self.database.call(social_graph.aio_mutes, user_id, limit, cursor)

    async def delete_story(self, author_id: UUID, story_id: UUID, now: datetime) -> bool:
        """Soft-delete the author's story (idempotent); False when no story with this id is theirs."""
        return await self.database.call(stories.aio_delete_story, author_id, story_id, now)

    async def viewers(
        self, author_id: UUID, story_id: UUID, since: datetime, limit: int, cursor: Position | None
    ) -> list[Viewer] | None:
        """None when the story is not the author's or was created before `since`."""
        return await self.database.call(engagement.aio_viewers, author_id, story_id, since, limit, cursor)

    # --- reports and moderation (stories/store/moderation.py) ------------------------------------------------

    async def file_report(
        self,
        reporter_id: UUID,
        target_type: str,
        target_id: UUID,
        reason: str,
        note: str | None,
        now: datetime,
        hide_threshold: int,
        claim: IdempotencyClaim[Report] | None,
    ) -> Report | Replay:
        """File a report of a story or a user (the reporter's existing one when they already reported it); a
        Replay for a retried Idempotency-Key. Raises NotFound (a target the reporter may not see),
        InvalidRequest (their own story, themself), IdempotencyKeyReused."""
        return await self.database.call(
            moderation.aio_file_report,
            reporter_id,
            target_type,
            target_id,
            reason,
            note,
            now,
            hide_threshold,
            claim,
        )

    async def is_moderator(self, user_id: UUID) -> bool:
        return await self.database.call(moderation.aio_is_moderator, user_id)

    async def set_moderator(self, email: str, grant: bool, now: datetime) -> bool | None:
        """Grant or revoke the moderator role; None for an unknown email, else whether it changed."""
        return await self.database.call(moderation.aio_set_moderator, email, grant, now)

    async def report_cases(self, status: str, limit: int, cursor: Position | None) -> list[ReportCase]:
        return await self.database.call(moderation.aio_report_cases, status, limit, cursor)

    async def resolve(
        self, moderator_id: UUID, entry_id: UUID, action: str, note: str | None, now: datetime
    ) -> Resolution:
        """Decide a case with its audit entry, in one transaction (see moderation.aio_resolve for the errors)."""
        return await self.database.call(moderation.aio_resolve, moderator_id, entry_id, action, note, now)

    async def unsuspend(self, moderator_id: UUID, user_id: UUID, note: str | None, now: datetime) -> bool | None:
        """Lift a suspension; None for an unknown user, else whether it changed."""
        return await self.database.call(moderation.aio_unsuspend, moderator_id, user_id, note, now)

    async def audit(self, limit: int, cursor: Position | None) -> list[AuditEntry]:
        return await self.database.call(moderation.aio_audit, limit, cursor)

    async def report_backlog(self) -> Backlog:
        return await self.database.call(moderation.aio_report_backlog)
