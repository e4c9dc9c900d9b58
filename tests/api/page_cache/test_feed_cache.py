"""The feed cache keeps API.md's freshness rules with the cache on (FEED_CACHE_SECONDS=30, the default).

The caller's own new stories, follows, unfollows and expiry apply at once; other users' new stories may lag.
A hit costs no PostgreSQL round trip.
"""

from __future__ import annotations

import gc
import shutil
import uuid
from datetime import timedelta

import pytest

from stories.api.json_shapes import story_fragment
from stories.feed_cache import FeedCache, LocalVersions, RedisVersions
from stories.redis import open_redis
from stories.store.models import Story
from tests.fixtures.redis import RedisProcess
from tests.helpers import post_story, signup, two_processes

# The cache these tests run against, the app's own (`client`'s); `counting` (conftest.py) counts the store query it
# saves.
CACHE = "feed"


async def feed_ids(client, account, query=""):
    response = await client.get(f"/feed{query}", headers=account.auth)
    assert response.status_code == 200
    return [story["id"] for story in (await response.get_json())["stories"]]


async def test_a_hit_costs_no_database_query_and_others_stories_may_lag(client, counting, metrics):
    alice, bob = await signup(client), await signup(client)
    first = await post_story(client, alice)
    assert await feed_ids(client, bob) == [first]
    queries = counting.queries
    assert await feed_ids(client, bob) == [first]
    assert counting.queries == queries
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "hit"}) == 1
    # Alice's new public story may reach Bob's cached page late (API.md allows FEED_CACHE_SECONDS).
    await post_story(client, alice)
    assert await feed_ids(client, bob) == [first]


async def test_a_cached_page_serves_each_story_as_its_own_read_does(client, metrics):
    alice, bob = await signup(client), await signup(client)
    story = await post_story(client, alice, text="as read")
    single = await (await client.get(f"/stories/{story}", headers=bob.auth)).get_json()
    for _ in range(2):
        page = await (await client.get("/feed", headers=bob.auth)).get_json()
        assert page["stories"] == [single]
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "hit"}) == 1


async def test_own_stories_follows_and_unfollows_apply_at_once(client, clock):
    alice, bob = await signup(client), await signup(client)
    assert await feed_ids(client, bob) == []
    friends = await post_story(client, alice, "friends")
    assert await feed_ids(client, bob) == []

    clock.advance(1)
    own = await post_story(client, bob, "private")
    assert await feed_ids(client, bob) == [own]

    assert (await client.post(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 200
    assert await feed_ids(client, bob) == [own, friends]

    assert (await client.delete(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 204
    assert await feed_ids(client, bob) == [own]


async def test_expiry_applies_at_once_and_the_cursor_still_walks_every_story(client, clock, app_deps):
    alice, bob = await signup(client), await signup(client)
    ttl = app_deps.settings.story_ttl_seconds
    old = await post_story(client, alice, text="old")
    clock.advance(ttl / 2)
    new = await post_story(client, alice, text="new")
    assert await feed_ids(client, bob, "?limit=1") == [new]
    assert await feed_ids(client, bob) == [new, old]
    clock.advance(ttl / 2)  # `old` expires; the pages above are still cached
    assert await feed_ids(client, bob) == [new]
    page = await (await client.get("/feed?limit=1", headers=bob.auth)).get_json()
    assert [s["id"] for s in page["stories"]] == [new]
    rest = await (await client.get(f"/feed?limit=1&cursor={page['next_cursor']}", headers=bob.auth)).get_json()
    assert rest["stories"] == []


async def test_versions_in_redis_reach_every_process_and_a_down_redis_bypasses(
    store, metrics, clock, redis_link, closed_redis_url
):
    # Two processes' caches, one Redis: a follow made through A is seen by B's very next read.
    a = FeedCache(store, RedisVersions(redis_link), metrics, 30, present=story_fragment)
    b = FeedCache(store, RedisVersions(redis_link), metrics, 30, present=story_fragment)
    viewer = uuid.uuid4()
    before = await b.versions.current(viewer, [])
    assert before == await a.versions.current(viewer, [])
    await b.entries(viewer, clock.now(), 10, None)
    await a.changed(viewer)
    after = await b.versions.current(viewer, [])
    assert after.version != before.version
    assert after == await a.versions.current(viewer, [])
    await b.entries(viewer, clock.now(), 10, None)
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "miss"}) == 2

    async with open_redis(closed_redis_url) as down:
        c = FeedCache(store, RedisVersions(down), metrics, 30, present=story_fragment)
        await c.entries(viewer, clock.now(), 10, None)
        await c.entries(viewer, clock.now(), 10, None)
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "bypass"}) == 2


async def warm(client, *accounts):
    """Read each feed twice, so the second read is a cached page."""
    for account in accounts:
        first = await feed_ids(client, account)
        assert await feed_ids(client, account) == first


async def test_blocks_and_unblocks_apply_at_once_to_both_feeds(client, clock, metrics):
    alice, bob = await signup(client), await signup(client)
    await client.post(f"/follow/{alice.user_id}", headers=bob.auth)
    await client.post(f"/follow/{bob.user_id}", headers=alice.auth)
    alice_public, alice_friends = await post_story(client, alice), await post_story(client, alice, "friends")
    clock.advance(1)
    bob_public = await post_story(client, bob)
    await warm(client, alice, bob)
    assert set(await feed_ids(client, bob)) == {alice_public, alice_friends, bob_public}

    assert (await client.post(f"/blocks/{bob.user_id}", headers=alice.auth)).status_code == 200
    assert await feed_ids(client, bob) == [bob_public]
    assert set(await feed_ids(client, alice)) == {alice_public, alice_friends}

    await warm(client, alice, bob)
    assert (await client.delete(f"/blocks/{bob.user_id}", headers=alice.auth)).status_code == 204
    # The public story is back at once; the friends story stays hidden: the block removed Bob's follow.
    assert await feed_ids(client, bob) == [bob_public, alice_public]
    assert bob_public in await feed_ids(client, alice)
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "hit"}) >= 4


async def test_mutes_and_unmutes_apply_at_once(client):
    alice, bob = await signup(client), await signup(client)
    story = await post_story(client, alice)
    await warm(client, bob)
    assert await feed_ids(client, bob) == [story]
    assert (await client.post(f"/mutes/{alice.user_id}", headers=bob.auth)).status_code == 200
    assert await feed_ids(client, bob) == []
    await warm(client, bob)
    assert (await client.delete(f"/mutes/{alice.user_id}", headers=bob.auth)).status_code == 204
    assert await feed_ids(client, bob) == [story]


async def test_a_delete_applies_at_once_to_every_cached_page_holding_the_story(client, clock, counting):
    alice, bob, cy = await signup(client), await signup(client), await signup(client)
    old = await post_story(client, alice, text="old")
    clock.advance(1)
    doomed = await post_story(client, alice, text="doomed")
    await warm(client, alice, bob, cy)
    page = await (await client.get("/feed?limit=1", headers=bob.auth)).get_json()
    assert [s["id"] for s in page["stories"]] == [doomed]
    queries = counting.queries
    assert await feed_ids(client, cy) == [doomed, old]
    assert counting.queries == queries  # cached

    assert (await client.delete(f"/stories/{doomed}", headers=alice.auth)).status_code == 204
    for account in (alice, bob, cy):
        assert await feed_ids(client, account) == [old]
    page = await (await client.get("/feed?limit=1", headers=bob.auth)).get_json()
    assert [s["id"] for s in page["stories"]] == [old]
    # Pages without the deleted story are still served from the cache.
    await warm(client, bob)
    queries = counting.queries
    await client.delete(f"/stories/{doomed}", headers=alice.auth)
    assert await feed_ids(client, bob) == [old]
    assert counting.queries == queries


@pytest.mark.redis
async def test_blocks_mutes_and_deletes_through_one_process_apply_to_the_next_read_on_another(
    app_deps, metrics, redis_link
):
    """Two processes (two apps with their own page caches), one database, one Redis: every change made through
    A applies to the very next read through B, whatever B has cached."""
    a, b = two_processes(app_deps, redis_link, metrics)
    alice, bob, cy = await signup(a), await signup(a), await signup(a)
    story = await post_story(a, alice)
    cy_story = await post_story(a, cy)
    assert set(await feed_ids(b, bob)) == {story, cy_story}
    assert (await b.get("/feed", headers=bob.auth)).status_code == 200  # cached in B now

    assert (await a.post(f"/blocks/{bob.user_id}", headers=alice.auth)).status_code == 200
    assert await feed_ids(b, bob) == [cy_story]
    assert (await a.delete(f"/blocks/{bob.user_id}", headers=alice.auth)).status_code == 204
    assert set(await feed_ids(b, bob)) == {story, cy_story}

    assert (await a.post(f"/mutes/{cy.user_id}", headers=bob.auth)).status_code == 200
    assert await feed_ids(b, bob) == [story]
    assert (await a.delete(f"/mutes/{cy.user_id}", headers=bob.auth)).status_code == 204
    assert set(await feed_ids(b, bob)) == {story, cy_story}

    assert set(await feed_ids(b, cy)) == {story, cy_story}  # Cy's page, cached in B
    assert (await a.delete(f"/stories/{story}", headers=alice.auth)).status_code == 204
    assert await feed_ids(b, bob) == [cy_story]
    assert await feed_ids(b, cy) == [cy_story]
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "bypass"}) is None


class PagesOf:
    """A feed store whose every page holds `size` made-up stories (the cache's bookkeeping is all under test)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.queries = 0

    async def feed(self, viewer_id, now, limit, cursor):
        self.queries += 1
        return [
            Story(uuid.uuid4(), viewer_id, "t", None, "public", now, now + timedelta(hours=1)) for _ in range(self.size)
        ]


async def test_the_cache_is_bounded_in_stories_and_drops_the_least_recently_read_pages(metrics, clock):
    store = PagesOf(10)
    feeds = FeedCache(store, LocalVersions(30), metrics, 30, present=story_fragment, max_stories=25)
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for viewer in (a, b, a, c):  # a is read again before c arrives: b is the least recently read
        await feeds.entries(viewer, clock.now(), 10, None)
    assert store.queries == 3
    await feeds.entries(a, clock.now(), 10, None)
    await feeds.entries(c, clock.now(), 10, None)
    assert store.queries == 3
    await feeds.entries(b, clock.now(), 10, None)  # evicted: read again, and a goes out in turn
    assert store.queries == 4
    await feeds.entries(a, clock.now(), 10, None)
    assert store.queries == 5


async def test_redis_versions_never_repeat_after_redis_loses_the_key(redis_link):
    # A lost key read as 0 and counted up again: a page cached before a block or a delete matched once more.
    versions = RedisVersions(redis_link)
    user = uuid.uuid4()
    key = redis_link.key("feedver", str(user))
    seen = []
    for _ in range(3):
        seen.append((await versions.current(user, ())).version)
        await versions.changed(user)
        seen.append((await versions.current(user, ())).version)
        await redis_link.execute(lambda client: client.delete([key]))  # Redis restarted without its data
    assert len(set(seen)) == len(seen), seen
    # A version read twice with no change between is the same (pages cached under it still match).
    assert (await versions.current(user, ())).version == (await versions.current(user, ())).version


class Rows:
    """A feed store that returns what `stories` holds now (a delete or a block is a removal from it)."""

    def __init__(self, stories) -> None:
        self.stories = stories

    async def feed(self, viewer_id, now, limit, cursor):
        return list(self.stories)


@pytest.fixture
def persistent_redis(tmp_path):
    """A private redis-server that comes back with its data when killed and started again."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("no redis-server on PATH: this test kills and restarts one of its own")
    server = RedisProcess(executable, tmp_path, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        gc.collect()


async def test_a_delete_and_a_block_made_while_redis_was_down_apply_once_it_is_back_with_its_data(
    metrics, clock, persistent_redis
):
    # Found by the chaos soak (bench/chaos.py): the delete's mark and the block's version bump were lost while
    # Redis was down, Redis came back with the version a page cached before the outage carried, and that page
    # showed the deleted story (and the blocked author's) for up to FEED_CACHE_SECONDS.
    now = clock.now()
    author, viewer = uuid.uuid4(), uuid.uuid4()
    deleted, blocked, kept = (
        Story(uuid.uuid4(), author, "t", None, "public", now, now + timedelta(hours=1)) for _ in range(3)
    )
    rows = Rows([deleted, blocked, kept])
    async with (
        open_redis(persistent_redis.url, retry_interval=0.0) as link_a,
        open_redis(persistent_redis.url, retry_interval=0.0) as link_b,
    ):
        a = FeedCache(rows, RedisVersions(link_a), metrics, 30, present=story_fragment)
        b = FeedCache(rows, RedisVersions(link_b), metrics, 30, present=story_fragment)
        read = [e.story for e in await b.entries(viewer, now, 10, None)]
        assert read == [deleted, blocked, kept]  # cached in B
        persistent_redis.stop()
        rows.stories = [kept]  # the delete and the block commit, through A
        await a.story_deleted(author, deleted.id)
        await a.changed(viewer)
        assert [e.story for e in await b.entries(viewer, now, 10, None)] == [kept]  # B bypasses its cache
        persistent_redis.start()
        assert [e.story for e in await b.entries(viewer, now, 10, None)] == [kept]
    assert metrics.registry.get_sample_value("feed_cache_requests_total", {"result": "miss"}) == 2
