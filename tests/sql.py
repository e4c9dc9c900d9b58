"""A PostgreSQL connection of a test's own, beside the service's pool: to look at or change the database behind
the service's back, or to hold a lock while the service works.

asyncpg runs on a bridge (stories/store/bridge.py), as in the service: `connect_sql(bridge, url)` when the test
has a bridge that outlives the connection (the `bridge` fixture), `sql_connection(url)` for a connection and a
bridge of its own, both gone at the end of the block.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import trio

from stories.store.bridge import Bridge, open_bridge

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

CLOSE_SECONDS = 5.0


class SqlConnection:
    """One asyncpg connection, each call a crossing of the bridge. Not for concurrent use."""

    def __init__(self, bridge: Bridge, connection: asyncpg.Connection) -> None:
        self._bridge = bridge
        self._connection = connection

    async def execute(self, statement: str, *args: Any) -> str:
        status: str = await self._bridge.run(self._connection.execute, statement, *args)
        return status

    async def fetch(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await self._bridge.run(self._connection.fetch, statement, *args)
        return rows

    async def fetchval(self, statement: str, *args: Any) -> Any:
        return await self._bridge.run(self._connection.fetchval, statement, *args)

    async def close(self) -> None:
        with trio.move_on_after(CLOSE_SECONDS, shield=True):
            await self._bridge.run(self._connection.close)


async def connect_sql(bridge: Bridge, database_url: str) -> SqlConnection:
    """A connection on `bridge`; close it before the bridge ends."""
    return SqlConnection(bridge, await bridge.run(asyncpg.connect, database_url))


@asynccontextmanager
async def sql_connection(database_url: str) -> AsyncIterator[SqlConnection]:
    """A connection on a bridge of its own, both closed when the block ends."""
    async with open_bridge() as bridge:
        connection = await connect_sql(bridge, database_url)
        try:
            yield connection
        finally:
            await connection.close()


async def fetch(database_url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one statement, on a connection and a bridge of its own."""
    async with sql_connection(database_url) as connection:
        return await connection.fetch(statement, *args)
