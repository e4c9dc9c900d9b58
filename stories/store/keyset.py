"""Keyset paging: one page of a list (the first page's statement, or the one after a position), and the paging
part of a statement that reads an owner's rows after a position."""

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


def owned_after(select: str, owner: str, order: tuple[str, ...], *, descending: bool = False) -> str:
    """`select` (its columns and FROM) narrowed to the rows whose `owner` column is $1 that come after the
    position ($2, ...) in `order` (ascending, or descending in every column), at most the last parameter of them.
    """
    columns, params = ", ".join(order), ", ".join(f"${n}" for n in range(2, len(order) + 2))
    if len(order) > 1:
        columns, params = f"({columns})", f"({params})"
    direction = " DESC" if descending else ""
    return (
        f"{select} WHERE {owner} = $1 AND {columns} {'<' if descending else '>'} {params}"
        f" ORDER BY {', '.join(column + direction for column in order)} LIMIT ${len(order) + 2}"
    )
