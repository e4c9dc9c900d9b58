"""The trio-facing store: coarse methods, one bridge crossing each, errors translated at the crossing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

import asyncpg
import structlog
import trio_asyncio

from stories.errors import StoreUnavailable
from stories.store import _pg

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from datetime import datetime
    from uuid import UUID

    from stories.store.models import Migration, User

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

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def pool_size(self) -> int:
        return self._pool.get_size()

    @property
    def pool_idle(self) -> int:
        return self._pool.get_idle_size()

    async def _call(self, fn: Callable[..., Awaitable[R]], *args: object) -> R:
        try:
            result: R = await trio_asyncio.aio_as_trio(fn)(self._pool, *args)
            return result
        except _UNAVAILABLE as exc:
            log.warning("db.unavailable", operation=fn.__name__, error=repr(exc))
            raise StoreUnavailable("the database is unavailable; retry shortly") from exc
        except asyncio.CancelledError as exc:
            # A trio cancel arrives as trio.Cancelled; an asyncio cancel with no trio cancel behind it means
            # the pool was torn down under us. As a BaseException it would kill the process: answer 503.
            raise StoreUnavailable("the database operation was interrupted") from exc

    async def ping(self) -> None:
        await self._call(_pg.aio_ping)

    async def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        return await self._call(_pg.aio_migrate, migrations)

    async def create_user(self, user_id: UUID, email: str, password_hash: str, now: datetime) -> User | None:
        return await self._call(_pg.aio_create_user, user_id, email, password_hash, now)

    async def user_by_email(self, email: str) -> User | None:
        return await self._call(_pg.aio_user_by_email, email)
