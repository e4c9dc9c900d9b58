"""BucketKeeper: in-process buckets on trio's MockClock; shared buckets and fallback against real Redis."""

from __future__ import annotations

import uuid

import pytest
import trio
import trio.testing

from stories.actors.ratelimit import (
    ACTION_EXPORT,
    ACTION_LOGIN,
    ACTION_REACTIONS,
    ACTION_STORIES,
    ACTION_UPLOADS,
    LOGIN_FAILURES,
    LOGIN_WINDOW_SECONDS,
    BucketKeeper,
    Decision,
)
from stories.redis import RedisLink, open_redis
from stories.settings import Settings
from tests.fixtures.redis import RedisProcess, capture_all_logs

LIMITS = {ACTION_STORIES: 20, ACTION_REACTIONS: 60}


def local_keeper(**overrides: object) -> BucketKeeper:
    return BucketKeeper(limits=LIMITS, **overrides)


async def take(keeper: BucketKeeper, user: uuid.UUID | str, action: str, times: int) -> list[Decision]:
    return [await keeper.acquire(user, action) for _ in range(times)]


# In-process buckets: pure mechanics on the mock clock.


async def test_twenty_stories_then_refused_with_retry_after(autojump_clock: trio.testing.MockClock):
    keeper = local_keeper()
    user = uuid.uuid4()
    with trio.fail_after(10):
        decisions = await take(keeper, user, ACTION_STORIES, 21)
    assert all(d.allowed and d.retry_after == 0 and not d.shared for d in decisions[:20])
    # 20 per minute: the next token comes 3 s after the bucket ran dry.
    assert decisions[20] == Decision(allowed=False, retry_after=3)


async def test_retry_after_counts_down_and_is_honest(autojump_clock: trio.testing.MockClock):
    keeper = local_keeper()
    user = uuid.uuid4()
    with trio.fail_after(100):
        await take(keeper, user, ACTION_STORIES, 20)
        await trio.sleep(1.5)
        refused = await keeper.acquire(user, ACTION_STORIES)
        assert refused == Decision(allowed=False, retry_after=2)  # 1.5 s left, rounded up
        await trio.sleep(refused.retry_after)
        assert (await keeper.acquire(user, ACTION_STORIES)).allowed


async def test_refill_is_continuous_and_capped(autojump_clock: trio.testing.MockClock):
    keeper = local_keeper()
    user = uuid.uuid4()
    with trio.fail_after(1000):
        await take(keeper, user, ACTION_STORIES, 20)
        await trio.sleep(30)  # half a minute: half the bucket
        assert [d.allowed for d in await take(keeper, user, ACTION_STORIES, 11)] == [True] * 10 + [False]
        await trio.sleep(600)  # idle for long: the bucket holds its capacity, no more
        assert [d.allowed for d in await take(keeper, user, ACTION_STORIES, 21)] == [True] * 20 + [False]


async def test_buckets_are_per_user_and_per_action(autojump_clock: trio.testing.MockClock):
    keeper = local_keeper()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    with trio.fail_after(10):
        await take(keeper, alice, ACTION_STORIES, 20)
        assert not (await keeper.acquire(alice, ACTION_STORIES)).allowed
        assert (await keeper.acquire(bob, ACTION_STORIES)).allowed
        reactions = await take(keeper, alice, ACTION_REACTIONS, 61)
    assert all(d.allowed for d in reactions[:60])
    assert reactions[60] == Decision(allowed=False, retry_after=1)  # 60 per minute: one a second


async def test_unknown_action_is_a_programming_error():
    with pytest.raises(KeyError):
        await local_keeper().acquire(uuid.uuid4(), "likes")


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        BucketKeeper(limits={ACTION_STORIES: 0})


def test_from_settings_uses_the_configured_limits(tmp_path):
    settings = Settings(
        data_dir=tmp_path,
        rate_limit_stories_per_minute=7,
        rate_limit_reactions_per_minute=9,
        rate_limit_uploads_per_minute=11,
    )
    keeper = BucketKeeper.from_settings(settings, None)
    assert keeper.limits == {
        ACTION_STORIES: 7,
        ACTION_REACTIONS: 9,
        ACTION_UPLOADS: 11,
        ACTION_LOGIN: 10,
        ACTION_EXPORT: 1,
    }
    assert keeper.period_of(ACTION_STORIES) == keeper.period_of(ACTION_UPLOADS) == 60.0
    assert keeper.period_of(ACTION_LOGIN) == 900.0  # API.md: 10 failed logins per 15 minutes
    assert keeper.period_of(ACTION_EXPORT) == 600.0  # API.md: 1 export per 10 minutes
    assert keeper.redis is None


# Failed logins: a sliding window of 10 per normalized email per 15 minutes.

LOGIN_LIMITS = {ACTION_STORIES: 20, ACTION_REACTIONS: 60, ACTION_LOGIN: LOGIN_FAILURES}
LOGIN_PERIODS = {ACTION_LOGIN: LOGIN_WINDOW_SECONDS}


def login_keeper(**overrides: object) -> BucketKeeper:
    return BucketKeeper(limits=LOGIN_LIMITS, periods=LOGIN_PERIODS, windows=frozenset({ACTION_LOGIN}), **overrides)


async def test_login_window_is_ten_per_fifteen_minutes(autojump_clock: trio.testing.MockClock):
    keeper = login_keeper()
    with trio.fail_after(10_000):
        decisions = await take(keeper, "a@example.com", ACTION_LOGIN, 11)
        assert [d.allowed for d in decisions] == [True] * 10 + [False]
        assert decisions[10].retry_after == 900  # until the first failure leaves the window
        await trio.sleep(899)
        assert (await keeper.acquire("a@example.com", ACTION_LOGIN)) == Decision(allowed=False, retry_after=1)
        await trio.sleep(1)  # all ten were at t=0: the whole window has room again, no more
        assert [d.allowed for d in await take(keeper, "a@example.com", ACTION_LOGIN, 11)] == [True] * 10 + [False]


async def test_ten_spread_failures_within_fifteen_minutes_are_counted(autojump_clock: trio.testing.MockClock):
    """Not a bucket that refills as it goes: ten failures 85 s apart still fill the window."""
    keeper = login_keeper()
    with trio.fail_after(10_000):
        for _ in range(10):
            assert (await keeper.acquire("a@example.com", ACTION_LOGIN)).allowed
            await trio.sleep(85)
        # t = 850 s: the first failure (t = 0) leaves the window at t = 900.
        assert (await keeper.acquire("a@example.com", ACTION_LOGIN)) == Decision(allowed=False, retry_after=50)
        await trio.sleep(50)
        assert (await keeper.acquire("a@example.com", ACTION_LOGIN)).allowed
        assert (await keeper.acquire("a@example.com", ACTION_LOGIN)) == Decision(allowed=False, retry_after=85)


async def test_string_subjects_have_their_own_buckets(autojump_clock: trio.testing.MockClock):
    keeper = login_keeper()
    with trio.fail_after(10):
        await take(keeper, "a@example.com", ACTION_LOGIN, 10)
        assert not (await keeper.acquire("a@example.com", ACTION_LOGIN)).allowed
        assert (await keeper.acquire("b@example.com", ACTION_LOGIN)).allowed


async def test_refund_gives_a_token_back_up_to_the_capacity(autojump_clock: trio.testing.MockClock):
    keeper = login_keeper()
    user = "a@example.com"
    with trio.fail_after(10):
        await take(keeper, user, ACTION_LOGIN, 10)
        await keeper.refund(user, ACTION_LOGIN)
        assert (await keeper.acquire(user, ACTION_LOGIN)).allowed
        assert not (await keeper.acquire(user, ACTION_LOGIN)).allowed
        # Refunds on a full (or unknown) bucket never raise it above its capacity.
        for _ in range(5):
            await keeper.refund("fresh@example.com", ACTION_LOGIN)
        assert [d.allowed for d in await take(keeper, "fresh@example.com", ACTION_LOGIN, 11)] == [True] * 10 + [False]


async def test_prune_uses_each_actions_own_period(autojump_clock: trio.testing.MockClock):
    keeper = login_keeper()
    with trio.fail_after(1000):
        await keeper.acquire("a@example.com", ACTION_LOGIN)
        await keeper.acquire(uuid.uuid4(), ACTION_STORIES)
        await trio.sleep(60)  # the story token is back (3 s); the login one needs 90 s
    assert keeper.prune() == 1
    assert len(keeper) == 1


async def test_prune_drops_only_buckets_that_refilled(autojump_clock: trio.testing.MockClock):
    keeper = local_keeper()
    idle, busy = uuid.uuid4(), uuid.uuid4()
    with trio.fail_after(100):
        await take(keeper, idle, ACTION_STORIES, 1)
        await trio.sleep(50)
        await take(keeper, busy, ACTION_STORIES, 5)
        await trio.sleep(10)  # idle's one token is back after 3 s; busy still lacks some
    assert keeper.prune() == 1
    assert len(keeper) == 1
    await keeper.acquire(busy, ACTION_STORIES)
    assert len(keeper) == 1


async def test_run_prunes_on_its_tick(autojump_clock: trio.testing.MockClock):
    keeper = local_keeper(prune_interval=60.0)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            for _ in range(50):
                await keeper.acquire(uuid.uuid4(), ACTION_REACTIONS)
            assert len(keeper) == 50
            await trio.sleep(61)
            assert len(keeper) == 0
            nursery.cancel_scope.cancel("test done")


async def test_memory_is_capped_by_evicting_the_least_recently_used(autojump_clock: trio.testing.MockClock):
    keeper = local_keeper(max_buckets=3)
    first, second, third, fourth = (uuid.uuid4() for _ in range(4))
    with trio.fail_after(10):
        for user in (first, second, third):
            await take(keeper, user, ACTION_STORIES, 20)
        await keeper.acquire(first, ACTION_STORIES)  # first is now the most recently used
        await keeper.acquire(fourth, ACTION_STORIES)  # evicts second
        assert len(keeper) == 3
        assert not (await keeper.acquire(first, ACTION_STORIES)).allowed
        assert not (await keeper.acquire(third, ACTION_STORIES)).allowed
        assert (await keeper.acquire(second, ACTION_STORIES)).allowed  # forgotten: a fresh bucket


# Redis buckets: real Redis, real clock (never autojump with real I/O).


async def test_redis_login_buckets_are_shared_refundable_and_expire(
    redis_url: str, redis_prefix: str, redis_link: RedisLink
):
    subject = f"{uuid.uuid4().hex}@example.com"
    async with open_redis(redis_url, key_prefix=redis_prefix) as other_link:
        one = login_keeper(redis=redis_link)
        two = login_keeper(redis=other_link)
        decisions = [await (one if i % 2 else two).acquire(subject, ACTION_LOGIN) for i in range(10)]
        assert all(d.allowed and d.shared for d in decisions)
        refused = await one.acquire(subject, ACTION_LOGIN)
        assert (refused.allowed, refused.shared) == (False, True)
        assert 899 <= refused.retry_after <= 900  # until the first failure leaves the window
        await two.refund(subject, ACTION_LOGIN)  # a refund in one process frees a token for all
        assert (await one.acquire(subject, ACTION_LOGIN)).allowed
        assert not (await two.acquire(subject, ACTION_LOGIN)).allowed
    key = f"{redis_prefix}rl:{ACTION_LOGIN}:{subject}"
    assert 60_000 < await redis_link.client.pttl(key) <= 900_000
    assert (one.fallbacks, two.fallbacks, len(one), len(two)) == (0, 0, 0, 0)


async def test_refund_falls_back_to_local_buckets_when_redis_is_down(closed_redis_url: str):
    async with open_redis(closed_redis_url) as link:
        keeper = login_keeper(redis=link)
        await take(keeper, "a@example.com", ACTION_LOGIN, 10)
        await keeper.refund("a@example.com", ACTION_LOGIN)
        decisions = await take(keeper, "a@example.com", ACTION_LOGIN, 2)
    assert [(d.allowed, d.shared) for d in decisions] == [(True, False), (False, False)]


async def test_redis_buckets_are_shared_between_processes(redis_url: str, redis_prefix: str, redis_link: RedisLink):
    # Two links with their own clients and connection pools, as two processes would have.
    limits = {ACTION_STORIES: 5, ACTION_REACTIONS: 60}
    user = uuid.uuid4()
    async with open_redis(redis_url, key_prefix=redis_prefix) as other_link:
        one = BucketKeeper(limits=limits, redis=redis_link)
        two = BucketKeeper(limits=limits, redis=other_link)
        decisions = [await keeper.acquire(user, ACTION_STORIES) for keeper in (one, two, one, two, one, two)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert all(d.shared for d in decisions)
    assert decisions[5].retry_after == 12  # 5 per minute: one token every 12 s
    assert (one.fallbacks, two.fallbacks, len(one), len(two)) == (0, 0, 0, 0)


async def test_redis_bucket_hash_expires_and_is_namespaced(redis_link: RedisLink, redis_prefix: str):
    keeper = BucketKeeper(limits=LIMITS, redis=redis_link)
    user = uuid.uuid4()
    await keeper.acquire(user, ACTION_REACTIONS)
    key = f"{redis_prefix}rl:{ACTION_REACTIONS}:{user}"
    assert 0 < await redis_link.client.pttl(key) <= 60_000
    assert set(await redis_link.client.hkeys(key)) == {b"tokens", b"ts"}


async def test_redis_script_is_reloaded_after_a_script_flush(redis_process: RedisProcess):
    # SCRIPT FLUSH empties the whole server's script cache: only on a private server the test started.
    async with open_redis(redis_process.url, key_prefix="t:") as link:
        assert link is not None
        keeper = BucketKeeper(limits=LIMITS, redis=link)
        user = uuid.uuid4()
        assert (await keeper.acquire(user, ACTION_STORIES)).shared
        await link.client.script_flush()  # as after a Redis restart or failover
        decision = await keeper.acquire(user, ACTION_STORIES)
    assert decision.shared
    assert decision.allowed


async def test_redis_down_from_the_start_falls_back_to_local_buckets(closed_redis_url: str):
    async with open_redis(closed_redis_url) as link:
        keeper = BucketKeeper(limits={ACTION_STORIES: 3, ACTION_REACTIONS: 60}, redis=link)
        user = uuid.uuid4()
        decisions = await take(keeper, user, ACTION_STORIES, 4)
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert not any(d.shared for d in decisions)
    assert decisions[3].retry_after == 20
    assert keeper.fallbacks == 4


async def test_redis_outage_mid_flight_falls_back_then_returns(redis_process: RedisProcess):
    limits = {ACTION_STORIES: 3, ACTION_REACTIONS: 60}
    user = uuid.uuid4()
    async with open_redis(redis_process.url, retry_interval=0.0) as link:
        assert link is not None
        keeper = BucketKeeper(limits=limits, redis=link)
        assert (await keeper.acquire(user, ACTION_STORIES)).shared
        with capture_all_logs() as logs:
            redis_process.stop()
            # Down: decided in-process, and still limited per process (a full local bucket of 3).
            down = await take(keeper, user, ACTION_STORIES, 4)
            assert [(d.allowed, d.shared) for d in down] == [(True, False)] * 3 + [(False, False)]
            assert down[3].retry_after == 20
            redis_process.start()  # an empty Redis: the shared bucket starts full again
            back = await take(keeper, user, ACTION_STORIES, 4)
        assert [(d.allowed, d.shared) for d in back] == [(True, True)] * 3 + [(False, True)]
    assert [entry["event"] for entry in logs] == ["redis.unavailable", "redis.recovered"]
    assert keeper.fallbacks == 4
