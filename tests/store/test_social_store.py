"""The social store: one statement per feed page and per "seen by" page (names and reactions included), and follow
counters that stay equal to the rows whatever removes them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import asyncpg

from stories.store import Store, open_database
from stories.store.models import Story


async def aio_round_trips(pool: asyncpg.Pool) -> int:
    """Statements sent so far on the pool's only connection (asyncpg counts them per protocol)."""
    return sum(holder._con._protocol.queries_count for holder in pool._holders if holder._con is not None)


async def aio_execute(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    async with pool.acquire() as conn:
        await conn.execute(sql, *args)


async def aio_counts(pool: asyncpg.Pool) -> list[tuple[int, int, int, int]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT u.followers_count, u.following_count,
                      (SELECT count(*) FROM follows f WHERE f.followee_id = u.id) AS followers,
                      (SELECT count(*) FROM follows f WHERE f.follower_id = u.id) AS following
               FROM users u ORDER BY u.id"""
        )
    return [tuple(row) for row in rows]


async def new_user(store: Store, now, name: str | None = None):
    return await store.create_user(uuid.uuid4(), f"{uuid.uuid4().hex}@example.com", "x", now, name)


async def test_a_feed_page_and_a_viewers_page_are_one_statement_each(settings, tmp_path, clock):
    async with open_database(settings.database_url, data_dir=tmp_path, pool_size=1) as database:
        store = Store(database)
        now = clock.now()
        authors = [await new_user(store, now, f"author {i}") for i in range(5)]
        reader = await new_user(store, now)
        story_ids = []
        for i, author in enumerate(authors):
            await store.follow(reader.id, author.id, now)
            for visibility in ("public", "friends"):
                story = Story(uuid.uuid4(), author.id, "hi", None, visibility, now, now + timedelta(days=1))
                await store.create_story(story, [], None)
                story_ids.append(story.id)
                await store.record_view(reader.id, now + timedelta(seconds=i), story.id)
                await store.add_reaction(reader.id, now, story.id, uuid.uuid4(), "🔥")

        before = await database.call(aio_round_trips)
        page = await store.feed(reader.id, now, 21, None)
        assert await database.call(aio_round_trips) - before == 1
        assert len(page) == 10
        assert {(s.author_id, s.author_name) for s in page} == {(a.id, f"author {i}") for i, a in enumerate(authors)}

        before = await database.call(aio_round_trips)
        viewers = await store.viewers(authors[0].id, story_ids[0], now - timedelta(days=7), 51, None)
        assert await database.call(aio_round_trips) - before == 1
        assert viewers is not None
        assert [(v.user_id, v.reactions) for v in viewers] == [(reader.id, ("🔥",))]


async def test_follow_counters_follow_every_insert_and_delete(store, clock, database_url):
    now = clock.now()
    users = [await new_user(store, now) for _ in range(4)]
    for follower in users:
        for followee in users:
            if follower != followee:
                await store.follow(follower.id, followee.id, now)
    await store.unfollow(users[0].id, users[1].id)
    await store.block(users[2].id, users[3].id, now)
    counts = await store.database.call(aio_counts)
    assert [(a, b) for a, b, _, _ in counts] == [(c, d) for _, _, c, d in counts]
    me = await store.me(users[3].id)
    assert (me.followers, me.following) == (2, 2)
    # A user deleted by an operator takes their follows with them (cascade); the others' counters follow.
    await store.database.call(aio_execute, "DELETE FROM users WHERE id = $1", users[0].id)
    counts = await store.database.call(aio_counts)
    assert [(a, b) for a, b, _, _ in counts] == [(c, d) for _, _, c, d in counts]
    me = await store.me(users[3].id)
    assert (me.followers, me.following) == (1, 1)
