"""The realtime event log: first views and reactions, read back in event-id order (schema/0010_story_events.sql).

Two readers:
- `EventLog.replay` (the pool): one author's events after a cursor, for `GET /ws?after=` and `GET /me/events`;
- `open_tail` (a dedicated connection): every author's events after the relay's cursor, for live delivery.

Both serve only rows written by transactions older than the oldest one still running in this database ("the
horizon"). Ids are (xid, seq), so a row that commits late (its transaction was running) always has an id above
every row already served, and no cursor ever skips it; it is served once its transaction has ended. The price:
an event waits for every write transaction of this database that began before it, however unrelated, to end (a
few milliseconds normally; a transaction left open stalls delivery, and the relay logs `events.horizon_stalled`).

The `aio_*` functions run on the bridge's asyncio loop (no trio); the classes are the trio side.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncpg
import trio

from stories.domain import EventId
from stories.errors import StoreUnavailable
from stories.events import Event, StoryReacted, StoryViewed
from stories.store.bridge import close_own_connection, own_connection_crossing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from datetime import datetime
    from uuid import UUID

    from stories.store.bridge import Bridge
    from stories.store.database import Database

__all__ = [
    "DEFAULT_TAIL_PAGE",
    "TAIL_APPLICATION_NAME",
    "EventLog",
    "EventTail",
    "ReplayPage",
    "TailPage",
    "open_tail",
    "tail_connector",
]


DEFAULT_TAIL_PAGE = 500
TAIL_APPLICATION_NAME = "stories-events"
SETTLE_FIRST_SECONDS = 0.002
SETTLE_LIMIT_SECONDS = 0.5

_COLUMNS_VIEWS = (
    "'v' AS kind, event_xid, event_seq, author_id, story_id, viewer_id AS user_id, NULL AS emoji, viewed_at AS at"
)
_COLUMNS_REACTIONS = "'r', event_xid, event_seq, author_id, story_id, user_id, emoji, created_at"
_ORDER = "ORDER BY event_xid, event_seq"


def _events_sql(where: str) -> str:
    """Both tables' events matching `where` (`{at}` is the event's time), in id order, at most $1: an index
    range per table, merged. A reaction to one's own story is stored (it counts in /me/stats) but is no event.
    """
    views, reactions = where.replace("{at}", "viewed_at"), where.replace("{at}", "created_at")
    return f"""
        SELECT * FROM (
            (SELECT {_COLUMNS_VIEWS} FROM story_views WHERE {views} {_ORDER} LIMIT $1)
            UNION ALL
            (SELECT {_COLUMNS_REACTIONS} FROM reactions WHERE {reactions} AND user_id <> author_id {_ORDER} LIMIT $1)
        ) events
        {_ORDER} LIMIT $1"""


# The horizon, from the statement's snapshot: the oldest transaction still running in this database, else the
# next transaction id. The snapshot's xmin would do, but it counts every database of the server: a long write in
# another one (a bulk load, a migration) would stall this service's events. A running transaction that
# pg_stat_activity places in another database cannot write these tables; any other (unknown, prepared) counts.
_HORIZON_CTE = """
    h AS MATERIALIZED (
        SELECT coalesce(running, next_xid) AS horizon, next_xid FROM (
            SELECT pg_snapshot_xmax(snap) AS next_xid,
                   (SELECT min(x) FROM pg_snapshot_xip(snap) AS x
                     WHERE x::xid NOT IN (SELECT backend_xid FROM pg_stat_activity
                                          WHERE datname <> current_database() AND backend_xid IS NOT NULL))
                       AS running
            FROM pg_current_snapshot() AS snap) s)"""
# One statement: the horizon and the rows below it come from the same snapshot. $1 limit, $2/$3 cursor.
_TAIL_SQL = f"""
    WITH {_HORIZON_CTE}
    SELECT h.horizon, h.next_xid, e.* FROM h LEFT JOIN ({
    _events_sql("(event_xid, event_seq) > ($2::xid8, $3::bigint) AND event_xid < (SELECT horizon FROM h)")
}) e ON true
    ORDER BY e.event_xid, e.event_seq"""
# $1 limit, $2 horizon, $5 author; then $3/$4 cursor, or $3 the oldest time served.
_AUTHOR_AFTER_SQL = _events_sql(
    "author_id = $5 AND (event_xid, event_seq) > ($3::xid8, $4::bigint) AND event_xid < $2::xid8"
)
_AUTHOR_SINCE_SQL = _events_sql("author_id = $4 AND {at} > $3 AND event_xid < $2::xid8")
_HORIZON_SQL = f"WITH {_HORIZON_CTE} SELECT horizon, next_xid FROM h"
# When the event a cursor names was recorded (no row: it never was one of this author's, or it was purged).
_CURSOR_AT_SQL = """
    SELECT viewed_at FROM story_views WHERE author_id = $1 AND event_xid = $2::xid8 AND event_seq = $3
    UNION ALL
    SELECT created_at FROM reactions WHERE author_id = $1 AND event_xid = $2::xid8 AND event_seq = $3
      AND user_id <> author_id
    LIMIT 1"""


def _event(row: asyncpg.Record) -> Event:
    event_id = EventId(row["event_xid"], row["event_seq"])
    if row["kind"] == "v":
        return StoryViewed(event_id, row["author_id"], row["story_id"], row["user_id"], row["at"])
    return StoryReacted(event_id, row["author_id"], row["story_id"], row["user_id"], row["emoji"], row["at"])


@dataclass(frozen=True, slots=True)
class ReplayPage:
    """One author's events after a cursor, oldest first. `stale`: the cursor is older than the window (or
    names no event of this author), so events it missed may be gone: the client must refetch."""

    events: list[Event]
    more: bool
    stale: bool
    horizon: int
    next_xid: int


@dataclass(frozen=True, slots=True)
class TailPage:
    """Every author's events after the cursor, below the horizon, oldest first. `cursor` is where the next
    read starts: the last event's id when the page is `full`, else the horizon itself (everything below it has
    been read). `horizon` is the oldest running transaction, `next_xid` the next one to start: a row committed
    before this read is served once `horizon` has passed `next_xid`."""

    events: list[Event]
    cursor: EventId
    full: bool
    horizon: int
    next_xid: int


async def aio_replay(
    pool: asyncpg.Pool, author_id: UUID, after: EventId | None, limit: int, since: datetime, vouched: bool
) -> ReplayPage:
    """Up to `limit` events of the author after `after`, or from `since` when None. A client's `after` must name
    one of the author's events recorded after `since` (else the page is stale and starts at `since`); a
    `vouched` cursor (the server's own) is taken as it is."""
    async with pool.acquire() as conn:
        snapshot = await conn.fetchrow(_HORIZON_SQL)
        assert snapshot is not None  # a SELECT of functions always returns one row
        horizon = snapshot["horizon"]
        stale = False
        if after is not None and not vouched:
            at = await conn.fetchval(_CURSOR_AT_SQL, author_id, after.xid, after.seq)
            stale = at is None or at <= since
        if after is None or stale:
            rows = await conn.fetch(_AUTHOR_SINCE_SQL, limit + 1, horizon, since, author_id)
        else:
            rows = await conn.fetch(_AUTHOR_AFTER_SQL, limit + 1, horizon, after.xid, after.seq, author_id)
    events = [_event(row) for row in rows[:limit]]
    return ReplayPage(events, more=len(rows) > limit, stale=stale, horizon=horizon, next_xid=snapshot["next_xid"])


async def aio_tail(conn: asyncpg.Connection[Any], after: EventId, limit: int) -> TailPage:
    rows = await conn.fetch(_TAIL_SQL, limit, after.xid, after.seq)
    horizon, next_xid = rows[0]["horizon"], rows[0]["next_xid"]
    events = [_event(row) for row in rows if row["kind"] is not None]
    full = len(events) >= limit
    # Not full: everything below the horizon has been read, and every later row has an id at or above it.
    cursor = events[-1].id if full else max(after, EventId(horizon, 0))
    return TailPage(events=events, cursor=cursor, full=full, horizon=horizon, next_xid=next_xid)


async def aio_horizon(conn: asyncpg.Connection[Any]) -> EventId:
    """Where a new tail starts: every row below the horizon is history, every later one is above it."""
    return EventId(await conn.fetchval(_HORIZON_SQL), 0)


async def aio_position(pool: asyncpg.Pool) -> EventId:
    """The log's position now: every event committed before this call has a lower id (its transaction's id is
    below the next one). A transaction still running gets a lower id too, whenever it commits."""
    async with pool.acquire() as conn:
        next_xid = await conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())")
    return EventId(next_xid, 0)


async def aio_connect_tail(connect: Callable[[], Awaitable[asyncpg.Connection[Any]]]) -> asyncpg.Connection[Any]:
    return await connect()


class EventLog:
    """One author's events, for catch-up (the pool; StoreUnavailable or Overloaded like any store call)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def position(self) -> EventId:
        """See `aio_position`: where a socket opened now, without `after`, starts its live stream."""
        return await self.database.call(aio_position)

    async def replay(
        self,
        author_id: UUID,
        after: EventId | None,
        limit: int,
        since: datetime,
        *,
        vouched: bool = False,
        settle: bool = False,
    ) -> ReplayPage:
        """See `aio_replay`. `vouched`: `after` is the server's own cursor, not a client's.

        `settle`: include what was committed before this call even while other transactions run: read again,
        after a short doubling delay, until the horizon has passed every transaction that had begun (at most
        SETTLE_LIMIT_SECONDS, then the page as it is; what it lacks comes with the next call).
        """
        page = await self.database.call(aio_replay, author_id, after, limit, since, vouched)
        if not settle:
            return page
        awaited, delay = page.next_xid, SETTLE_FIRST_SECONDS
        with trio.move_on_after(SETTLE_LIMIT_SECONDS):
            while page.horizon < awaited:
                await trio.sleep(delay)
                delay *= 2
                page = await self.database.call(aio_replay, author_id, after, limit, since, vouched)
        return page


def tail_connector(dsn: str) -> Callable[[], Awaitable[asyncpg.Connection[Any]]]:
    """The tail's connection factory, named in `pg_stat_activity`."""
    return partial(asyncpg.connect, dsn, server_settings={"application_name": TAIL_APPLICATION_NAME})


class EventTail:
    """A dedicated connection reading the whole log (only the relay's tail loop uses it: never concurrently)."""

    def __init__(self, bridge: Bridge, conn: asyncpg.Connection[Any]) -> None:
        self._bridge = bridge
        self._conn = conn

    async def start(self) -> EventId:
        """The cursor of a tail that starts now."""
        start: EventId = await _cross(self._bridge, aio_horizon, self._conn)
        return start

    async def read(self, after: EventId, limit: int = DEFAULT_TAIL_PAGE) -> TailPage:
        page: TailPage = await _cross(self._bridge, aio_tail, self._conn, after, limit)
        return page


_cross = own_connection_crossing(StoreUnavailable, "the event tail failed")


@asynccontextmanager
async def open_tail(
    bridge: Bridge, connect: Callable[[], Awaitable[asyncpg.Connection[Any]]]
) -> AsyncIterator[EventTail]:
    """A tail on a connection of its own (outside the pool: busy requests never delay delivery)."""
    conn: asyncpg.Connection[Any] = await _cross(bridge, aio_connect_tail, connect)
    try:
        yield EventTail(bridge, conn)
    finally:
        await close_own_connection(bridge, conn, _cross)
