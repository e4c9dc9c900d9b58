import uuid
from datetime import timedelta

import trio

from stories.actors.expiry import ExpiryTicker
from stories.errors import Overloaded, StoreUnavailable
from stories.store import locks
from tests.conftest import START
from tests.helpers import signup
from tests.sql import sql_connection


class StubStore:
    """Hands out a scripted sequence of batch results (mechanics only)."""

    def __init__(self, results):
        self.results = list(results)
        self.calls = 0

    async def expire_batch(self, now, limit):
        self.calls += 1
        result = self.results.pop(0) if self.results else 0
        if isinstance(result, Exception):
            raise result
        return result

    async def recount_since(self, since, now=None, overlap_seconds=0.0):
        return 0

    async def purge_stories(self, before, limit):
        return 0

    async def purge_idempotency_keys(self, before, limit):
        return 0


async def test_run_once_drains_full_batches_then_stops(clock, metrics):
    store = StubStore([3, 3, 1])
    ticker = ExpiryTicker(store, clock, metrics, interval=60, batch_size=3)
    assert await ticker.run_once() == 7
    assert store.calls == 3
    assert metrics.stories_expired._value.get() == 7


async def test_a_run_that_loses_the_leadership_half_way_still_counts_what_it_did(clock, metrics):
    store = StubStore([3, 3, None])
    ticker = ExpiryTicker(store, clock, metrics, interval=60, batch_size=3)
    assert await ticker.run_once() == 6
    assert metrics.stories_expired._value.get() == 6


async def test_not_leader_does_nothing(clock, metrics):
    ticker = ExpiryTicker(StubStore([None]), clock, metrics, interval=60)
    assert await ticker.run_once() is None
    assert metrics.stories_expired._value.get() == 0


async def test_ticks_every_interval_and_survives_outage(clock, metrics, autojump_clock):
    # Overloaded (the pool's slots all taken for DB_ACQUIRE_TIMEOUT_SECONDS) crashed the actor.
    store = StubStore([0, StoreUnavailable("down"), 2, Overloaded("busy", retry_after=1), 0])
    ticker = ExpiryTicker(store, clock, metrics, interval=60)
    with trio.fail_after(3600):  # virtual time: a deadlock jumps straight here
        async with trio.open_nursery() as nursery:
            await nursery.start(ticker.run)
            await trio.sleep(60 * 4 + 1)
            nursery.cancel_scope.cancel()
    assert store.calls == 5
    assert metrics.stories_expired._value.get() == 2


async def test_expires_only_due_stories_on_real_database(client, store, clock, metrics):
    alice = await signup(client)
    for text in ("one", "two"):
        response = await client.post("/stories", json={"text": text, "visibility": "public"}, headers=alice.auth)
        assert response.status_code == 201
    clock.advance(86_400 - 1)
    await client.post("/stories", json={"text": "fresh", "visibility": "public"}, headers=alice.auth)
    clock.advance(1)
    ticker = ExpiryTicker(store, clock, metrics, interval=60, batch_size=1)
    assert await ticker.run_once() == 2
    assert await ticker.run_once() == 0
    reader = await signup(client)  # alice's token has expired with the day that passed
    feed = await (await client.get("/feed", headers=reader.auth)).get_json()
    assert [s["text"] for s in feed["stories"]] == ["fresh"]


async def test_only_one_leader_at_a_time(store, database_url, clock):
    async with sql_connection(database_url) as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", locks.EXPIRY_LOCK_ID)
        assert await store.expire_batch(START + timedelta(days=2), 10) is None
        await holder.execute("SELECT pg_advisory_unlock($1)", locks.EXPIRY_LOCK_ID)
        assert await store.expire_batch(START + timedelta(days=2), 10) == 0


async def _execute(database_url, sql, *args):
    async with sql_connection(database_url) as connection:
        return await connection.fetchval(sql, *args)


async def test_housekeeping_recounts_and_deletes_what_retention_no_longer_keeps(
    client, store, clock, metrics, database_url
):
    alice, bob = await signup(client), await signup(client)
    created = await client.post("/stories", json={"text": "old", "visibility": "public"}, headers=alice.auth)
    old = (await created.get_json())["id"]
    assert (await client.post(f"/stories/{old}/view", headers=bob.auth)).status_code == 200
    headers = {**alice.auth, "Idempotency-Key": "k1"}
    assert (
        await client.post("/stories", json={"text": "k", "visibility": "public"}, headers=headers)
    ).status_code == 201
    # The view's counter was never flushed (as if its process had crashed).
    assert await _execute(database_url, "SELECT view_count FROM stories WHERE id = $1", uuid.UUID(old)) == 0

    ticker = ExpiryTicker(store, clock, metrics, interval=60)
    await ticker.run_once()
    assert await _execute(database_url, "SELECT view_count FROM stories WHERE id = $1", uuid.UUID(old)) == 1

    clock.advance(86_400 + 1)  # both stories expire (soft delete), the key is older than 24 h
    await ticker.run_once()
    assert await _execute(database_url, "SELECT count(*) FROM idempotency_keys") == 0
    assert await _execute(database_url, "SELECT count(*) FROM stories WHERE deleted_at IS NOT NULL") == 2

    clock.advance(7 * 86_400 + 1)  # soft-deleted for more than RETENTION_DAYS: gone for good, views included
    await ticker.run_once()
    assert await _execute(database_url, "SELECT count(*) FROM stories") == 0
    assert await _execute(database_url, "SELECT count(*) FROM story_views") == 0
    assert metrics.retention_deleted.labels(kind="stories")._value.get() == 2
    assert metrics.retention_deleted.labels(kind="idempotency_keys")._value.get() == 1


async def test_counters_converge_after_an_outage_longer_than_the_first_look_back(
    client, store, clock, metrics, database_url
):
    # The first recount after a start looked back 10 minutes only: a view whose process crashed before it
    # flushed, more than 10 minutes before the next start, was never counted.
    await _execute(database_url, "DELETE FROM counter_recount")  # the session's database is shared
    await ExpiryTicker(store, clock, metrics, interval=60).run_once()  # a process recounted up to now
    alice, bob = await signup(client), await signup(client)
    story = (
        await (await client.post("/stories", json={"text": "x", "visibility": "public"}, headers=alice.auth)).get_json()
    )["id"]
    clock.advance(3600)
    assert (await client.post(f"/stories/{story}/view", headers=bob.auth)).status_code == 200
    # Its process crashed before flushing; the next one starts two hours later.
    clock.advance(2 * 3600)
    await ExpiryTicker(store, clock, metrics, interval=60).run_once()
    assert await _execute(database_url, "SELECT view_count FROM stories WHERE id = $1", uuid.UUID(story)) == 1


async def test_a_story_expired_more_than_retention_ago_goes_in_the_first_run_that_sees_it(
    client, store, clock, metrics, database_url
):
    # API.md "Retention": stories *expired* more than RETENTION_DAYS ago are deleted for good. Retention counts
    # from the expiry, not from when a worker got to it: here no worker ran for eight days (an outage, or a
    # separate expiry deployment scaled to zero).
    alice = await signup(client)
    created = await client.post("/stories", json={"text": "old", "visibility": "public"}, headers=alice.auth)
    story = uuid.UUID((await created.get_json())["id"])
    clock.advance(86_400 + 8 * 86_400)  # expired eight days ago

    await ExpiryTicker(store, clock, metrics, interval=60).run_once()

    assert await _execute(database_url, "SELECT count(*) FROM stories WHERE id = $1", story) == 0
