"""The trio-facing store: coarse methods, one bridge crossing each, errors translated at the crossing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog
import trio
import trio_asyncio

from stories.errors import StoreUnavailable
from stories.store import _pg

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterable, Sequence
    from datetime import datetime
    from uuid import UUID

    from stories.seed import SeedBatch
    from stories.store.models import (
        FeedCursor,
        Follow,
        IdempotencyClaim,
        Migration,
        Reaction,
        Replay,
        Stats,
        Story,
        User,
        View,
    )

__all__ = ["Store"]

log = structlog.get_logger()

R = TypeVar("R")

# What "the database is not there" looks like from asyncpg: refused/reset sockets, a server shutting down
# or not yet accepting, a connection dropped mid-query, too many clients, a statement cancelled by the server.
_UNAVAILABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,
)


class Store:
    """PostgreSQL, the single source of truth. Safe to share between tasks; every method is cancellable.

    Every public method is one use case and crosses into asyncio once (STYLE R14). Connection-level
    failures become `StoreUnavailable` (503); asyncpg objects never leave this class.
    """

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        # Where the pool connects (the embedded server too): for connections outside the pool (LISTEN).
        self.dsn = dsn

    @property
    def pool_size(self) -> int:
        return self._pool.get_size()

    @property
    def pool_idle(self) -> int:
        return self._pool.get_idle_size()

    async def _call(self, fn: Callable[..., Coroutine[Any, Any, R]], *args: object) -> R:
        """Run `fn(pool, *args)` on the asyncio side and wait for it, cancellably.

        Not `aio_as_trio`: on a trio cancel it cancels the asyncio task and then keeps waiting for it to end,
        and asyncpg ends a cancelled query only once the server confirms, which a hung server never does; so
        no deadline would bound a store call. Here a cancel asks the task to stop and returns at once; the task
        finishes (and frees its connection) in the background.
        """
        task: asyncio.Task[R] = trio_asyncio.current_loop.get().create_task(fn(self._pool, *args))
        finished = trio.Event()
        task.add_done_callback(lambda _: finished.set())
        try:
            await finished.wait()
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(_retrieve_outcome)
        try:
            return task.result()
        except _UNAVAILABLE as exc:
            log.warning("db.unavailable", operation=fn.__name__, error=repr(exc))
            raise StoreUnavailable("the database is unavailable; retry shortly") from exc
        except asyncio.CancelledError as exc:
            # Cancelled on the asyncio side with no trio cancel behind it: the pool was torn down under us.
            # As a BaseException it would kill the process: answer 503.
            raise StoreUnavailable("the database operation was interrupted") from exc

    async def ping(self) -> None:
        await self._call(_pg.aio_ping)

    async def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        return await self._call(_pg.aio_migrate, migrations)

    async def create_user(self, user_id: UUID, email: str, password_hash: str, now: datetime) -> User | None:
        return await self._call(_pg.aio_create_user, user_id, email, password_hash, now)

    async def user_by_email(self, email: str) -> User | None:
        return await self._call(_pg.aio_user_by_email, email)

    async def create_story(
        self, story: Story, audience: Sequence[UUID], claim: IdempotencyClaim | None
    ) -> Replay | None:
        """Create a story (+audience) atomically; a Replay when the Idempotency-Key was already used with
        this body. Raises IdempotencyKeyReused, InvalidRequest (unknown audience users)."""
        return await self._call(_pg.aio_create_story, story, audience, claim)

    async def visible_story(self, viewer_id: UUID, now: datetime, story_id: UUID) -> Story | None:
        return await self._call(_pg.aio_visible_story, viewer_id, now, story_id)

    async def feed(self, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None) -> list[Story]:
        return await self._call(_pg.aio_feed, viewer_id, now, limit, cursor)

    async def record_view(self, viewer_id: UUID, now: datetime, story_id: UUID) -> View | None:
        return await self._call(_pg.aio_record_view, viewer_id, now, story_id)

    async def add_reaction(
        self, user_id: UUID, now: datetime, story_id: UUID, reaction_id: UUID, emoji: str
    ) -> Reaction | None:
        return await self._call(_pg.aio_add_reaction, user_id, now, story_id, reaction_id, emoji)

    async def follow(self, follower_id: UUID, followee_id: UUID, now: datetime) -> Follow | None:
        return await self._call(_pg.aio_follow, follower_id, followee_id, now)

    async def unfollow(self, follower_id: UUID, followee_id: UUID) -> None:
        await self._call(_pg.aio_unfollow, follower_id, followee_id)

    async def stats(self, author_id: UUID, since: datetime) -> Stats:
        return await self._call(_pg.aio_stats, author_id, since)

    async def expire_batch(self, now: datetime, limit: int) -> int | None:
        """Soft-delete up to `limit` expired stories; None when another process is the expiry leader."""
        return await self._call(_pg.aio_expire_batch, now, limit)

    async def seed(self, batches: Iterable[SeedBatch], first_email: str | None, tables: Sequence[str]) -> None:
        """Bulk-load generated rows in one transaction (stories.seed); Conflict when already seeded."""
        await self._call(_pg.aio_seed_copy, batches, first_email, tables)


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    """Mark an abandoned task's outcome as seen, so asyncio does not warn that nobody retrieved it."""
    if not task.cancelled():
        task.exception()
