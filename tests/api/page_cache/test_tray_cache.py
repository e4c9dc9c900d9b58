"""The tray cache keeps API.md's freshness rules with the cache on (FEED_CACHE_SECONDS=30, the default).

The caller's own views apply to `seen` and to the next walk at once, on any process, without throwing the cached
tray away; their own stories, follows, blocks, mutes, deletes and expiry apply at once (the feed's versions);
other users' new stories may lag. A hit costs no PostgreSQL round trip.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta

import pytest
import trio

from stories.api import create_app
from stories.api.json_shapes import story_head
from stories.feed_cache import PRUNE_EVERY, RedisVersions
from stories.redis import open_redis
from stories.tray_cache import LocalSeenLog, RedisSeenLog, TrayCache
from tests.helpers import CountingStore, authors_a_second_apart, post_story, signup

# The cache these tests run against, the app's own (`client`'s); `counting` (conftest.py) counts the store query it
# saves.
CACHE = "tray"


async def tray(client, account, query=""):
    response = await client.get(f"/tray{query}", headers=account.auth)
    assert response.status_code == 200, await response.get_data()
    return await response.get_json()


async def shape(client, account):
    """[(author, [(story, seen)])] of the first page."""
    page = await tray(client, account, "?limit=50")
    return [
        (group["author"]["user_id"], [(story["id"], story["seen"]) for story in group["stories"]])
        for group in page["authors"]
    ]


def hits(metrics, result="hit"):
    return metrics.registry.get_sample_value("tray_cache_requests_total", {"result": result}) or 0


async def test_a_hit_costs_no_query_and_others_stories_may_lag(client, counting, metrics):
    alice, bob = await signup(client), await signup(client)
    first = await post_story(client, alice)
    assert await shape(client, bob) == [(alice.user_id, [(first, False)])]
    queries = counting.queries
    assert await shape(client, bob) == [(alice.user_id, [(first, False)])]
    assert counting.queries == queries
    assert hits(metrics) == 1
    await post_story(client, alice)  # may reach Bob's cached tray late (FEED_CACHE_SECONDS)
    assert await shape(client, bob) == [(alice.user_id, [(first, False)])]


async def test_the_callers_views_apply_at_once_and_keep_the_cache(client, counting, clock):
    alice, cy, bob = await signup(client), await signup(client), await signup(client)
    alices = await post_story(client, alice)
    clock.advance(1)
    cys = await post_story(client, cy)
    assert await shape(client, bob) == [(cy.user_id, [(cys, False)]), (alice.user_id, [(alices, False)])]
    queries = counting.queries
    assert (await client.post(f"/stories/{cys}/view", headers=bob.auth)).status_code == 200
    # Seen at once, and Cy (all seen now) goes after Alice in the next walk; no query: the cache was kept.
    assert await shape(client, bob) == [(alice.user_id, [(alices, False)]), (cy.user_id, [(cys, True)])]
    assert counting.queries == queries


async def test_own_stories_follows_mutes_blocks_deletes_and_expiry_apply_at_once(client, clock, metrics):
    alice, bob = await signup(client), await signup(client)
    friends = await post_story(client, alice, "friends")
    assert await shape(client, bob) == []
    own = await post_story(client, bob, "private")
    assert await shape(client, bob) == [(bob.user_id, [(own, False)])]
    assert (await client.post(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 200
    assert await shape(client, bob) == [(bob.user_id, [(own, False)]), (alice.user_id, [(friends, False)])]
    assert (await client.post(f"/mutes/{alice.user_id}", headers=bob.auth)).status_code == 200
    assert await shape(client, bob) == [(bob.user_id, [(own, False)])]
    assert (await client.delete(f"/mutes/{alice.user_id}", headers=bob.auth)).status_code == 204
    assert len(await shape(client, bob)) == 2
    assert (await client.post(f"/blocks/{bob.user_id}", headers=alice.auth)).status_code == 200
    assert await shape(client, bob) == [(bob.user_id, [(own, False)])]

    public = await post_story(client, alice)
    assert (await client.delete(f"/blocks/{bob.user_id}", headers=alice.auth)).status_code == 204
    assert await shape(client, bob) == [(bob.user_id, [(own, False)]), (alice.user_id, [(public, False)])]
    assert await shape(client, bob) == [(bob.user_id, [(own, False)]), (alice.user_id, [(public, False)])]
    hit = hits(metrics)
    assert (await client.delete(f"/stories/{public}", headers=alice.auth)).status_code == 204
    assert await shape(client, bob) == [(bob.user_id, [(own, False)])]
    assert hits(metrics) == hit  # the deletion mark turned the cached tray away

    clock.advance(600)
    assert await shape(client, bob) == []
    assert hits(metrics) == hit + 1  # expiry applies to the cached tray itself


@pytest.mark.redis
async def test_a_view_through_one_process_applies_to_the_next_read_on_another(app_deps, metrics, redis_link, clock):
    """Two processes (two apps with their own caches), one database, one Redis."""
    versions = RedisVersions(redis_link)
    counting = [CountingStore(app_deps.store, "tray") for _ in range(2)]
    a, b = (
        create_app(
            dataclasses.replace(
                app_deps,
                feeds=dataclasses.replace(app_deps.feeds, versions=versions),
                trays=TrayCache(
                    store, versions, RedisSeenLog(redis_link, timedelta(seconds=90)), metrics, 30, present=story_head
                ),
            )
        ).test_client()
        for store in counting
    )
    alice, bob = await signup(a), await signup(a)
    story = await post_story(a, alice)
    assert await shape(b, bob) == [(alice.user_id, [(story, False)])]
    assert (await a.post(f"/stories/{story}/view", headers=bob.auth)).status_code == 200
    assert await shape(b, bob) == [(alice.user_id, [(story, True)])]
    assert counting[1].queries == 1  # served from B's cache, the view laid over it
    assert (await a.delete(f"/stories/{story}", headers=alice.auth)).status_code == 204
    assert await shape(b, bob) == []


async def test_a_down_redis_bypasses_the_cache(store, metrics, clock, closed_redis_url):
    counting = CountingStore(store, "tray")
    viewer, story = uuid.uuid4(), uuid.uuid4()
    async with open_redis(closed_redis_url) as down:
        seen = RedisSeenLog(down, timedelta(seconds=90))
        trays = TrayCache(counting, RedisVersions(down), seen, metrics, 30, present=story_head)
        for _ in range(2):
            await trays.page(viewer, clock.now(), clock.now(), None, 10)
        await trays.viewed(viewer, story, clock.now())  # lost and logged, never raised
    assert hits(metrics, "bypass") == 2
    assert counting.queries == 2


async def test_the_local_seen_log_forgets_views_older_than_the_reads_it_corrects(autojump_clock, clock):
    seen = LocalSeenLog(30)
    viewer, story = uuid.uuid4(), uuid.uuid4()
    await seen.viewed(viewer, story, clock.now())
    assert await seen.recent(viewer) == {story: clock.now()}
    await trio.sleep(31)
    assert await seen.recent(viewer) == {}
    # Views are pruned as views come in, also those of a viewer who never reads their tray again.
    other = uuid.uuid4()
    for _ in range(PRUNE_EVERY):
        await seen.viewed(other, uuid.uuid4(), clock.now())
    assert set(seen._views) == {other}


async def test_a_cached_walk_returns_every_author_once_while_the_caller_views(client, clock, counting):
    me = await signup(client)
    authors, stories = await authors_a_second_apart(client, clock, 5)
    clock.advance(1)
    first = await tray(client, me, "?limit=2")
    served = [g["author"]["user_id"] for g in first["authors"]]
    cursor = first["next_cursor"]
    for author in authors:
        if author.user_id not in served:
            await client.post(f"/stories/{stories[author.user_id]}/view", headers=me.auth)
    while cursor is not None:
        page = await tray(client, me, f"?limit=2&cursor={cursor}")
        served += [g["author"]["user_id"] for g in page["authors"]]
        assert all(s["seen"] for g in page["authors"] for s in g["stories"])
        cursor = page["next_cursor"]
    assert served == [a.user_id for a in reversed(authors)]
    assert counting.queries == 1
    # The next walk: the views apply at once, from the same cached read.
    clock.advance(1)
    walked = [g["author"]["user_id"] for g in (await tray(client, me, "?limit=50"))["authors"]]
    assert walked == [a.user_id for a in reversed(authors[3:])] + [a.user_id for a in reversed(authors[:3])]
    assert counting.queries == 1


async def test_an_expiry_reorders_a_cached_tray_without_a_query(client, clock, counting):
    alice, cy, bob = await signup(client), await signup(client), await signup(client)
    alices = await post_story(client, alice)
    clock.advance(300)
    cys = await post_story(client, cy)
    for _ in range(2):  # the second read reuses the order computed by the first
        assert await shape(client, bob) == [(cy.user_id, [(cys, False)]), (alice.user_id, [(alices, False)])]
    clock.advance(300)  # Alice's story expires; Cy's lives on
    assert await shape(client, bob) == [(cy.user_id, [(cys, False)])]
    assert counting.queries == 1


async def authors_posting(client, clock, count):
    """`count` authors with one public story each, a second apart: newest last."""
    authors, stories = [], {}
    for _ in range(count):
        author = await signup(client)
        clock.advance(1)
        stories[author.user_id] = await post_story(client, author)
        authors.append(author)
    clock.advance(1)
    return authors, stories


async def walk(client, account, limit):
    served, cursor = [], None
    while True:
        page = await tray(client, account, f"?limit={limit}" + ("" if cursor is None else f"&cursor={cursor}"))
        served += [(g["author"]["user_id"], [s["seen"] for s in g["stories"]]) for g in page["authors"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return served


async def test_a_miss_reads_a_stretch_of_the_order_and_a_walk_past_it_reads_on(client, clock, counting):
    """A miss reads the authors of its page and the next few (20 in all, and one more), not the whole tray; a
    page past them reads again from the cursor, and the first stretch stays cached for the next walk."""
    me = await signup(client)
    authors, _ = await authors_posting(client, clock, 25)
    newest_first = [a.user_id for a in reversed(authors)]
    assert [author for author, _ in await walk(client, me, 10)] == newest_first
    assert counting.queries == 2  # pages 1 and 2 from the first read, page 3 past its 21 authors
    assert [author for author, _ in await walk(client, me, 20)] == newest_first
    assert counting.queries == 3  # page 1 from the first stretch (kept), page 2 read again


async def test_a_view_of_an_author_past_the_stretch_keeps_it(client, clock, counting):
    """Only the authors read can move into the stretch: a view of a story further down moves its author later
    still, so the stretch stays whole and is served; the author shows up seen at the end of the walk."""
    me = await signup(client)
    authors, stories = await authors_posting(client, clock, 25)
    first = await tray(client, me)
    queries = counting.queries
    oldest = authors[0].user_id
    assert (await client.post(f"/stories/{stories[oldest]}/view", headers=me.auth)).status_code == 200
    clock.advance(1)
    assert (await tray(client, me))["authors"] == first["authors"]
    assert counting.queries == queries
    walked = await walk(client, me, 20)
    assert walked[-1] == (oldest, [True])
    assert [author for author, _ in walked] == [a.user_id for a in reversed(authors[1:])] + [oldest]


async def test_views_moving_authors_out_of_the_stretch_read_it_again(client, clock, counting):
    """A tap through the first authors moves them to the seen part, past the stretch's end: the next walk's first
    page needs authors the stretch does not hold, so it reads again, and is right."""
    me = await signup(client)
    authors, stories = await authors_posting(client, clock, 25)
    await tray(client, me)
    queries = counting.queries
    tapped = [a.user_id for a in reversed(authors[-3:])]
    for author in tapped:
        assert (await client.post(f"/stories/{stories[author]}/view", headers=me.auth)).status_code == 200
    clock.advance(1)
    walked = await walk(client, me, 20)
    unseen = [a.user_id for a in reversed(authors[:-3])]
    assert walked == [(author, [False]) for author in unseen] + [(author, [True]) for author in tapped]
    assert counting.queries == queries + 2
