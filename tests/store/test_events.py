"""The event log (stories/store/events.py) against real PostgreSQL: order, the catch-up window, the horizon.

The horizon tests hold a transaction open on a connection of their own, as a slow request would, while other
events commit: nothing committed after it may be served before it, or a cursor would skip it.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import trio

from stories.domain import EventId
from stories.events import StoryReacted, StoryViewed
from stories.store.events import EventLog, open_tail, tail_connector
from stories.store.models import Story
from tests.conftest import START

if TYPE_CHECKING:
    from stories.store import Store

WINDOW_START = START - timedelta(days=7)


async def user(store: Store) -> uuid.UUID:
    user_id = uuid.uuid4()
    await store.create_user(user_id, f"{user_id.hex}@example.com", "x", START, None)
    return user_id


async def story(store: Store, author_id: uuid.UUID) -> uuid.UUID:
    story_id = uuid.uuid4()
    await store.create_story(
        Story(story_id, author_id, "hi", None, "public", START, START + timedelta(days=1)), [], None
    )
    return story_id


async def view(store: Store, viewer: uuid.UUID, story_id: uuid.UUID) -> None:
    recorded = await store.record_view(viewer, START, story_id)
    assert recorded is not None
    assert recorded.first_view


async def aio_open_view(dsn: str, story_id: uuid.UUID, author_id: uuid.UUID, viewer_id: uuid.UUID) -> Any:
    """Insert a view in a transaction left open; returns (connection, transaction) for aio_commit."""
    conn = await asyncpg.connect(dsn)
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute(
        "INSERT INTO story_views (story_id, author_id, viewer_id, viewed_at) VALUES ($1, $2, $3, $4)",
        story_id,
        author_id,
        viewer_id,
        START,
    )
    return conn, transaction


async def aio_commit(held: Any) -> None:
    conn, transaction = held
    await transaction.commit()
    await conn.close()


async def test_an_authors_events_replay_in_order_without_self_reactions(store: Store) -> None:
    log = EventLog(store.database)
    author, other, viewer = await user(store), await user(store), await user(store)
    mine, theirs = await story(store, author), await story(store, other)
    await view(store, viewer, mine)
    await view(store, viewer, theirs)
    await store.add_reaction(author, START, mine, uuid.uuid4(), "🔥")  # stored, but no event
    await store.add_reaction(viewer, START, mine, uuid.uuid4(), "😂")

    page = await log.replay(author, None, 10, WINDOW_START, settle=True)
    assert [type(e) for e in page.events] == [StoryViewed, StoryReacted]
    assert all(e.author_id == author and e.story_id == mine for e in page.events)
    assert page.events[0].id < page.events[1].id
    assert not page.more
    assert not page.stale
    # After the first: the second only. A page of one says more follow.
    first = page.events[0].id
    assert [e.id for e in (await log.replay(author, first, 10, WINDOW_START, settle=True)).events] == [
        page.events[1].id
    ]
    limited = await log.replay(author, None, 1, WINDOW_START, settle=True)
    assert [e.id for e in limited.events] == [first]
    assert limited.more


async def test_a_cursor_the_log_does_not_hold_is_stale(store: Store) -> None:
    log = EventLog(store.database)
    author, viewer = await user(store), await user(store)
    await view(store, viewer, await story(store, author))
    (event,) = (await log.replay(author, None, 10, WINDOW_START, settle=True)).events
    # Not one of this author's events (another author's, or made up): stale, and the page starts at the window.
    unknown = await log.replay(author, EventId(event.id.xid, event.id.seq + 1), 10, WINDOW_START, settle=True)
    assert unknown.stale
    assert [e.id for e in unknown.events] == [event.id]
    stranger = await log.replay(viewer, event.id, 10, WINDOW_START, settle=True)
    assert stranger.stale
    assert stranger.events == []
    # Older than the window: stale too.
    assert (await log.replay(author, event.id, 10, START + timedelta(seconds=1), settle=True)).stale
    # The server's own cursor is taken as it is.
    assert not (
        await log.replay(author, EventId(event.id.xid, event.id.seq + 1), 10, WINDOW_START, vouched=True, settle=True)
    ).stale


async def test_a_row_that_commits_late_is_never_skipped_by_a_cursor(store: Store) -> None:
    log = EventLog(store.database)
    author, early, late = await user(store), await user(store), await user(store)
    story_id = await story(store, author)
    bridge = store.database.bridge
    # `early` inserts first (smaller transaction id and sequence value) and commits last.
    held = await bridge.run(aio_open_view, store.database.direct_dsn, story_id, author, early)
    try:
        await view(store, late, story_id)
        # While it is open, the view committed after it is not served: a client that got it would move its
        # cursor past the held one, and never see it.
        assert (await log.replay(author, None, 10, WINDOW_START, settle=True)).events == []
    finally:
        await bridge.run(aio_commit, held)
    events = (await log.replay(author, None, 10, WINDOW_START, settle=True)).events
    assert [e.viewer_id for e in events if isinstance(e, StoryViewed)] == [early, late]


async def test_the_tail_waits_for_the_horizon_then_serves_both_in_order(store: Store) -> None:
    author, early, late = await user(store), await user(store), await user(store)
    story_id = await story(store, author)
    bridge = store.database.bridge
    async with open_tail(bridge, tail_connector(store.database.direct_dsn)) as tail:
        cursor = await tail.start()
        held = await bridge.run(aio_open_view, store.database.direct_dsn, story_id, author, early)
        try:
            await view(store, late, story_id)
            page = await tail.read(cursor)
            assert page.events == []
            assert page.horizon < page.next_xid  # a transaction is running
            cursor = page.cursor
        finally:
            await bridge.run(aio_commit, held)
        with trio.fail_after(10):
            # Other transactions (of any database on the server) may hold the horizon a moment longer.
            while not (page := await tail.read(cursor)).events:  # noqa: ASYNC110 (the horizon is in another process)
                await trio.sleep(0.01)
        assert [e.viewer_id for e in page.events if isinstance(e, StoryViewed)] == [early, late]
        # The cursor moved past both: they are read once.
        assert page.cursor > page.events[-1].id
        assert (await tail.read(page.cursor)).events == []


async def aio_open_write(dsn: str) -> Any:
    """A write transaction (it has a transaction id) left open, in whatever database `dsn` names."""
    conn = await asyncpg.connect(dsn)
    transaction = conn.transaction()
    await transaction.start()
    await conn.execute("SELECT pg_current_xact_id()")
    return conn, transaction


async def test_a_long_write_in_another_database_does_not_hold_events_back(store: Store, fresh_database: str) -> None:
    log = EventLog(store.database)
    author, viewer = await user(store), await user(store)
    story_id = await story(store, author)
    bridge = store.database.bridge
    elsewhere = await bridge.run(aio_open_write, fresh_database)
    try:
        await view(store, viewer, story_id)
        # No waiting for the other database's transaction (settle off: one read).
        with trio.fail_after(10):
            while not (await log.replay(author, None, 10, WINDOW_START)).events:  # noqa: ASYNC110
                # Only this database's own short transactions (other tests' cleanup) can be in the way.
                await trio.sleep(0.01)
        held_here = await bridge.run(aio_open_write, store.database.direct_dsn)
        try:
            await view(store, await user(store), story_id)
            # One in this database does hold them back.
            assert len((await log.replay(author, None, 10, WINDOW_START)).events) == 1
        finally:
            await bridge.run(aio_commit, held_here)
    finally:
        await bridge.run(aio_commit, elsewhere)
