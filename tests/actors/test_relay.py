"""EventRelay against a real PostgreSQL (LISTEN/NOTIFY) and a real Redis (pub/sub).

Each relay stands for one server process, with a hub of its own; two relays on one database (or one Redis)
behave like two processes. Real I/O, so real time: every wait is bounded by `trio.fail_after`.
"""

from __future__ import annotations

import random
import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

import asyncpg
import orjson
import pytest
import trio
import trio_asyncio

from stories.actors.hub import CloseReason, Hub
from stories.actors.messages import StoryViewed
from stories.actors.relay import (
    RELAY_APPLICATION_NAME,
    EventRelay,
    Feed,
    Overflow,
    PostgresTransport,
    RedisTransport,
    RelayDisconnected,
    postgres_connector,
)
from stories.actors.supervisor import ActorSpec, supervise
from stories.metrics import Metrics
from stories.redis import open_redis
from stories.store.bridge import Bridge
from tests.fixtures.redis import capture_all_logs

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.fixtures.redis import RedisProcess

WAIT = 10.0


def viewed(author_id: uuid.UUID) -> StoryViewed:
    return StoryViewed(author_id=author_id, story_id=uuid.uuid4(), viewer_id=uuid.uuid4(), viewed_at=datetime.now(UTC))


def pg_relay(database_url: str, channel: str, bridge: Bridge) -> EventRelay:
    return EventRelay(Hub(Metrics()), PostgresTransport(postgres_connector(database_url), channel, bridge))


async def next_id(receive: trio.MemoryReceiveChannel[str]) -> str:
    with trio.fail_after(WAIT):
        return str(orjson.loads(await receive.receive())["id"])


async def listening(*relays: EventRelay) -> None:
    with trio.fail_after(WAIT):
        for relay in relays:
            await relay.wait_listening()


async def terminate_listeners(database_url: str) -> int:
    async def kill() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            killed: int = await conn.fetchval(
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = current_database() AND application_name = $1""",
                RELAY_APPLICATION_NAME,
            )
            return killed
        finally:
            await conn.close()

    return int(await trio_asyncio.aio_as_trio(kill)())


async def assert_two_processes(a: EventRelay, b: EventRelay) -> None:
    """An event published on B reaches A's sockets, and B's own sockets exactly once."""
    author, bystander = uuid.uuid4(), uuid.uuid4()
    with a.hub.subscribe(author) as on_a, b.hub.subscribe(author) as on_b, a.hub.subscribe(bystander) as other:
        first = viewed(author)
        b.publish(first)
        assert await next_id(on_a.receive) == str(first.id)
        assert await next_id(on_b.receive) == str(first.id)
        # The broker keeps one order per channel: once A's event has come back to A and gone round to B,
        # B's own first event has come back to B too, and must have been skipped.
        second = viewed(author)
        a.publish(second)
        assert await next_id(on_a.receive) == str(second.id)
        assert await next_id(on_b.receive) == str(second.id)
        third = viewed(author)
        b.publish(third)
        assert await next_id(on_a.receive) == str(third.id)
        assert await next_id(on_b.receive) == str(third.id)
        with pytest.raises(trio.WouldBlock):
            on_b.receive.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            other.receive.receive_nowait()


def test_feed_drops_and_marks_the_place_of_the_loss() -> None:
    feed = Feed(size=3)
    for n in range(6):
        feed.offer(str(n))
    items = []
    while True:
        try:
            items.append(feed.receive.receive_nowait())
        except trio.WouldBlock:
            break
    assert items == ["0", "1", "2", Overflow()]
    assert feed.take_dropped() == 3
    feed.offer("6")
    feed.close()
    feed.offer("after close is ignored")
    assert feed.receive.receive_nowait() == "6"


async def test_postgres_relay_carries_events_between_processes(
    aio_loop: None, bridge: Bridge, database_url: str
) -> None:
    channel = f"events_{uuid.uuid4().hex[:8]}"
    a, b = pg_relay(database_url, channel, bridge), pg_relay(database_url, channel, bridge)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await listening(a, b)
        await assert_two_processes(a, b)
        nursery.cancel_scope.cancel("test done")


async def test_postgres_relay_batches_a_burst_in_order(aio_loop: None, bridge: Bridge, database_url: str) -> None:
    channel = f"events_{uuid.uuid4().hex[:8]}"
    a, b = pg_relay(database_url, channel, bridge), pg_relay(database_url, channel, bridge)
    author = uuid.uuid4()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await listening(a, b)
        with a.hub.subscribe(author) as on_a:
            events = [viewed(author) for _ in range(500)]
            for event in events:
                b.publish(event)
            # A's mailbox holds 64: read as we go, so nothing is dropped.
            received = [await next_id(on_a.receive) for _ in events]
            assert received == [str(event.id) for event in events]
            assert on_a.dropped == 0
        nursery.cancel_scope.cancel("test done")


async def test_terminated_listen_connection_makes_the_relay_raise(
    aio_loop: None, bridge: Bridge, database_url: str
) -> None:
    relay = pg_relay(database_url, f"events_{uuid.uuid4().hex[:8]}", bridge)
    with pytest.RaisesGroup(RelayDisconnected, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            await listening(relay)
            assert await terminate_listeners(database_url) == 1
            with trio.fail_after(WAIT):
                await trio.sleep_forever()
    assert not relay.listening


async def test_supervised_relay_comes_back_logs_the_gap_and_resyncs(
    aio_loop: None, bridge: Bridge, database_url: str
) -> None:
    channel = f"events_{uuid.uuid4().hex[:8]}"
    a, b = pg_relay(database_url, channel, bridge), pg_relay(database_url, channel, bridge)
    metrics = Metrics()
    author = uuid.uuid4()
    with capture_all_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(supervise, ActorSpec("relay-a", a.run), metrics, rng=random.Random(1)))
            await nursery.start(partial(supervise, ActorSpec("relay-b", b.run), metrics, rng=random.Random(2)))
            await listening(a, b)
            with a.hub.subscribe(author) as before:
                assert await terminate_listeners(database_url) == 2
                # On reconnecting, A tells the socket open across the gap to reconnect and refresh.
                with trio.fail_after(WAIT):
                    async for _ in before.receive:
                        pass
                assert before.close_reason is CloseReason.RESYNC
                await listening(a, b)
            # Events flow again after the restart.
            await assert_two_processes(a, b)
            nursery.cancel_scope.cancel("test done")
    for actor in ("relay-a", "relay-b"):
        assert metrics.registry.get_sample_value("actor_restarts_total", {"actor": actor}) == 1
    gaps = [entry for entry in logs if entry["event"] == "relay.gap"]
    assert len(gaps) == 2
    assert all(gap["down_seconds"] >= 0 for gap in gaps)


async def test_events_published_while_the_broker_is_down_are_sent_after_reconnect(
    aio_loop: None, bridge: Bridge, database_url: str
) -> None:
    channel = f"events_{uuid.uuid4().hex[:8]}"
    a, b = pg_relay(database_url, channel, bridge), pg_relay(database_url, channel, bridge)
    author = uuid.uuid4()
    event = viewed(author)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.run)
        await listening(a)
        with a.hub.subscribe(author) as on_a:
            # B's run() has not started: its outbox holds the event until it connects.
            b.publish(event)
            assert b.outbox_backlog == 1
            nursery.start_soon(b.run)
            assert await next_id(on_a.receive) == str(event.id)
        nursery.cancel_scope.cancel("test done")


@asynccontextmanager
async def redis_relays(url: str, prefix: str) -> AsyncIterator[tuple[EventRelay, EventRelay]]:
    async with open_redis(url, key_prefix=prefix) as link_a, open_redis(url, key_prefix=prefix) as link_b:
        assert link_a is not None
        assert link_b is not None
        a = EventRelay(Hub(Metrics()), RedisTransport(link_a, link_a.key("events")))
        b = EventRelay(Hub(Metrics()), RedisTransport(link_b, link_b.key("events")))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.run)
            nursery.start_soon(b.run)
            await listening(a, b)
            yield a, b
            nursery.cancel_scope.cancel("test done")


@pytest.mark.redis
async def test_redis_relay_carries_events_between_processes(redis_url: str, redis_prefix: str) -> None:
    async with redis_relays(redis_url, redis_prefix) as (a, b):
        await assert_two_processes(a, b)


@pytest.mark.redis
async def test_redis_relay_raises_when_its_subscription_is_killed(redis_process: RedisProcess) -> None:
    async with open_redis(redis_process.url, key_prefix="t:") as link:
        assert link is not None
        relay = EventRelay(Hub(Metrics()), RedisTransport(link, link.key("events")))
        with pytest.RaisesGroup(RelayDisconnected, flatten_subgroups=True):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay.run)
                await listening(relay)
                await link.client.client_kill(type_="pubsub")
                with trio.fail_after(WAIT):
                    await trio.sleep_forever()
        assert not relay.listening
