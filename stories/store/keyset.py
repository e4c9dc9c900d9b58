"""One page of a keyset-paged list: the first page's statement, or the one after a position."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

    from stories.store.models import Position


async def fetch_page(
    pool: asyncpg.Pool, first: str, after: str, args: tuple[object, ...], cursor: Position | None
) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        if cursor is None:
            return await conn.fetch(first, *args)
        return await conn.fetch(after, *args, cursor.at, cursor.id)
