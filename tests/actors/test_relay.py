"""EventRelay against a real PostgreSQL (the log, LISTEN/NOTIFY) and a real Redis (pub/sub).

Each relay stands for one server process, with a hub of its own; two relays on one database behave like two
processes. An event is a row in the log: a test records a view through the store, then wakes one relay (the
request handler's part). Real I/O, so real time: every wait is bounded by `trio.fail_after`.

The review findings this file guards (issue 10): a full outbox dropped events; the outbox was not flushed at
shutdown; a store call cancelled while its transaction committed published nothing; a partial publish failure
re-sent a batch (duplicates); a dead subscription went unnoticed; a tripped shared Redis breaker or a reconnect
closed every socket with 1012.
"""

from __future__ import annotations

import random
import uuid
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio

from stories.actors.access import build_access_watcher
from stories.actors.hub import Hub, Mailbox
from stories.actors.relay import (
    RELAY_APPLICATION_NAME,
    EventRelay,
    Feed,
    Overflow,
    PostgresTransport,
    RedisTransport,
    RelayDisconnected,
    build_relay,
    postgres_connector,
)
from stories.actors.supervisor import ActorSpec, supervise
from stories.api.authentication import Callers
from stories.clock import FixedClock
from stories.domain import EventId
from stories.errors import StoreUnavailable
from stories.metrics import Metrics
from stories.redis import RedisUnavailable, open_redis
from stories.security import TokenIssuer
from stories.store import open_database
from stories.store.events import TAIL_APPLICATION_NAME, TailPage, open_tail, tail_connector
from stories.store.models import Story
from stories.store.sessions import SessionStore
from tests.conftest import START, TEST_JWT_SECRET
from tests.sql import sql_connection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stories.store import Store

WAIT = 10.0


def pg_relay(store: Store, channel: str, **options: Any) -> EventRelay:
    database = store.database
    return EventRelay(
        Hub(Metrics()),
        PostgresTransport(postgres_connector(database.direct_dsn), channel, database.bridge),
        partial(open_tail, database.bridge, tail_connector(database.direct_dsn)),
        **options,
    )


def redis_relay(store: Store, link: Any, **options: Any) -> EventRelay:
    database = store.database
    return EventRelay(
        Hub(Metrics()),
        RedisTransport(link, link.key("events")),
        partial(open_tail, database.bridge, tail_connector(database.direct_dsn)),
        **options,
    )


class Scene:
    """An author with a story, and a source of first views of it (each a new viewer): events in the log."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.author = uuid.uuid4()
        self.story = uuid.uuid4()

    async def setup(self) -> Scene:
        await self.store.create_user(self.author, f"{self.author.hex}@example.com", "x", START, None)
        await self.store.create_story(
            Story(self.story, self.author, "hi", None, "public", START, START + timedelta(days=1)), [], None
        )
        return self

    async def view(self) -> uuid.UUID:
        viewer = uuid.uuid4()
        await self.store.create_user(viewer, f"{viewer.hex}@example.com", "x", START, None)
        recorded = await self.store.record_view(viewer, START, self.story)
        assert recorded is not None
        assert recorded.first_view
        return viewer


async def next_viewer(mailbox: Mailbox) -> uuid.UUID:
    with trio.fail_after(WAIT):
        _, text = await mailbox.receive.receive()
    return uuid.UUID(orjson.loads(text)["payload"]["viewer_id"])


def nothing_more(mailbox: Mailbox) -> bool:
    try:
        mailbox.receive.receive_nowait()
    except trio.WouldBlock:
        return True
    return False


async def listening(*relays: EventRelay) -> None:
    with trio.fail_after(WAIT):
        for relay in relays:
            await relay.wait_listening()


@asynccontextmanager
async def running(*relays: EventRelay) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        for relay in relays:
            nursery.start_soon(relay.run)
        await listening(*relays)
        yield
        nursery.cancel_scope.cancel("test done")


async def terminate(database_url: str, *application_names: str) -> int:
    async with sql_connection(database_url) as conn:
        killed = await conn.fetchval(
            """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
               WHERE datname = current_database() AND application_name = ANY($1::text[])""",
            list(application_names),
        )
    return int(killed)


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


async def test_an_event_reaches_every_process_once_whatever_the_hints_do(store: Store) -> None:
    channel = f"events_{uuid.uuid4().hex[:8]}"
    # A reads the log only when woken (no poll within the test): B's hints must reach it.
    a, b = pg_relay(store, channel, poll_seconds=60), pg_relay(store, channel, poll_seconds=60)
    scene = await Scene(store).setup()
    async with running(a, b):
        with a.hub.subscribe(scene.author) as on_a, b.hub.subscribe(scene.author) as on_b:
            viewers = [await scene.view() for _ in range(3)]
            # The hint is sent many times (a retry after a partial failure, a broker that repeats): each event
            # still arrives once, in order.
            for _ in range(5):
                b.wake()
                a.wake()
            assert [await next_viewer(on_a) for _ in viewers] == viewers
            assert [await next_viewer(on_b) for _ in viewers] == viewers
            marker = await scene.view()
            b.wake()
            assert await next_viewer(on_a) == marker
            assert await next_viewer(on_b) == marker
            assert nothing_more(on_a)
            assert nothing_more(on_b)


async def test_a_burst_larger_than_any_queue_arrives_whole_and_in_order(store: Store) -> None:
    """The old outbox (1,024) dropped events past its size while the broker was away; the log has no limit."""
    channel = f"events_{uuid.uuid4().hex[:8]}"
    a, b = pg_relay(store, channel, poll_seconds=60), pg_relay(store, channel, poll_seconds=60)
    # Room for the whole burst: this test is about the relay (a socket refills its own mailbox's gaps).
    a.hub.mailbox_size = 2_000
    scene = await Scene(store).setup()
    async with running(a):
        with a.hub.subscribe(scene.author) as on_a:
            # B, where the burst is caused, is not connected to the broker: its wake-ups wait in B.
            viewers = []
            for _ in range(1_200):
                viewers.append(await scene.view())
                b.wake()
            async with running(b):
                assert [await next_viewer(on_a) for _ in viewers] == viewers
            assert on_a.dropped == 0
            assert nothing_more(on_a)


async def test_events_committed_without_a_wake_up_are_delivered(store: Store) -> None:
    """A store call cancelled while its transaction still commits wakes no one: the poll finds the row."""
    relay = pg_relay(store, f"events_{uuid.uuid4().hex[:8]}", poll_seconds=0.2)
    scene = await Scene(store).setup()
    async with running(relay):
        with relay.hub.subscribe(scene.author) as mailbox:
            viewer = await scene.view()  # and no wake()
            assert await next_viewer(mailbox) == viewer


async def test_a_restarted_relay_carries_on_from_its_cursor_and_closes_no_socket(
    store: Store, database_url: str
) -> None:
    channel = f"events_{uuid.uuid4().hex[:8]}"
    a = pg_relay(store, channel, poll_seconds=0.2)
    scene = await Scene(store).setup()
    metrics = Metrics()
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(supervise, ActorSpec("relay-a", a.run), metrics, rng=random.Random(1)))
        await listening(a)
        with a.hub.subscribe(scene.author) as mailbox:
            first = await scene.view()
            a.wake()
            assert await next_viewer(mailbox) == first
            assert await terminate(database_url, RELAY_APPLICATION_NAME, TAIL_APPLICATION_NAME) >= 1
            # Committed while the relay is down or coming back: still delivered, once, in order.
            during = [await scene.view() for _ in range(3)]
            assert [await next_viewer(mailbox) for _ in during] == during
            assert mailbox.close_reason is None
            assert nothing_more(mailbox)
        nursery.cancel_scope.cancel("test done")
    assert metrics.registry.get_sample_value("actor_restarts_total", {"actor": "relay-a"}) >= 1


async def test_a_wake_up_just_before_shutdown_still_reaches_the_other_processes(store: Store) -> None:
    channel = f"events_{uuid.uuid4().hex[:8]}"
    a, b = pg_relay(store, channel, poll_seconds=60), pg_relay(store, channel, poll_seconds=60)
    scene = await Scene(store).setup()
    async with running(a):
        with a.hub.subscribe(scene.author) as on_a:
            async with running(b):
                viewer = await scene.view()
                b.wake()
                # B is cancelled (shutdown) in the same breath: its pending hint goes out on the way.
            assert await next_viewer(on_a) == viewer


class SilentTransport:
    """A subscription that silently stopped receiving (a half-open connection): publishes go nowhere. Records
    when each subscription began and ended (the relay may subscribe again faster than a test could poll)."""

    name = "silent"

    def __init__(self) -> None:
        self.opened: list[float] = []
        self.closed: list[float] = []

    @asynccontextmanager
    async def open(self, feed: Feed) -> AsyncIterator[Any]:
        self.opened.append(trio.current_time())
        try:
            yield self
        finally:
            self.closed.append(trio.current_time())

    async def publish(self, hint: str) -> None:
        await trio.lowlevel.checkpoint()


class QuietLog:
    """An event log with nothing in it, read without I/O: the relay's tail on a quiet database."""

    async def start(self) -> EventId:
        await trio.lowlevel.checkpoint()
        return EventId(100, 0)

    async def read(self, after: EventId, limit: int = 500) -> TailPage:
        await trio.lowlevel.checkpoint()
        return TailPage([], after, full=False, horizon=after.xid, next_xid=after.xid)


@asynccontextmanager
async def open_quiet_log() -> AsyncIterator[QuietLog]:
    yield QuietLog()


async def test_a_subscription_that_went_silent_is_noticed_within_keepalive_and_io(autojump_clock) -> None:
    # All in trio and no I/O, so virtual time: the probe goes out after `keepalive_seconds` of quiet, and its
    # echo is given up on `io_seconds` later, however loaded the machine. The subscription is then replaced; the
    # relay itself (and its tail) runs on.
    transport = SilentTransport()
    relay = EventRelay(Hub(Metrics()), transport, open_quiet_log, keepalive_seconds=0.3, io_seconds=0.3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        with trio.fail_after(WAIT):
            while len(transport.opened) < 2:  # noqa: ASYNC110 (the relay subscribes again; nothing to wait on)
                await trio.sleep(0.01)
        assert transport.closed[0] - transport.opened[0] == pytest.approx(0.3 + 0.3)
        await listening(relay)
        nursery.cancel_scope.cancel("test done")


class LoopbackBroker:
    """One broker for several relays in one trio run, without I/O: a publish reaches every subscription."""

    name = "loopback"

    def __init__(self) -> None:
        self.feeds: list[Feed] = []

    @asynccontextmanager
    async def open(self, feed: Feed) -> AsyncIterator[Any]:
        self.feeds.append(feed)
        try:
            yield self
        finally:
            self.feeds.remove(feed)

    async def publish(self, hint: str) -> None:
        await trio.lowlevel.checkpoint()
        for feed in self.feeds:
            feed.offer(hint)


class CountedQuietLog(QuietLog):
    def __init__(self) -> None:
        self.reads = 0

    async def read(self, after: EventId, limit: int = 500) -> TailPage:
        self.reads += 1
        return await super().read(after, limit)


async def test_idle_processes_do_not_read_the_log_for_each_others_probes(autojump_clock) -> None:
    # Issue 19 (bench/scaleout.md): every process's keepalive probe woke every other process's tail, so N idle
    # processes read the log N x (N - 1) times per keepalive on top of their polls. A probe only checks the
    # prober's own subscription; a wake-up still reaches every other process.
    broker = LoopbackBroker()
    logs = [CountedQuietLog(), CountedQuietLog(), CountedQuietLog()]

    def relay(log: CountedQuietLog) -> EventRelay:
        @asynccontextmanager
        async def open_log() -> AsyncIterator[CountedQuietLog]:
            yield log

        return EventRelay(Hub(Metrics()), broker, open_log, keepalive_seconds=1.0, poll_seconds=1_000.0)

    relays = [relay(log) for log in logs]
    async with running(*relays):
        await trio.sleep(0.5)
        settled = [log.reads for log in logs]
        await trio.sleep(30)  # 30 probes from each
        assert [log.reads for log in logs] == settled
        relays[0].wake()
        await trio.sleep(0.5)
        assert [log.reads - before for log, before in zip(logs, settled, strict=True)] == [1, 1, 1]


class DownTransport:
    """A broker that is down: every subscription fails at once (Redis killed)."""

    name = "down"

    def __init__(self) -> None:
        self.attempts = 0

    @asynccontextmanager
    async def open(self, feed: Feed) -> AsyncIterator[Any]:
        self.attempts += 1
        raise RelayDisconnected("the broker is down")
        yield  # an async generator, as a transport's open() is


async def test_events_reach_open_sockets_while_the_broker_is_down(store: Store) -> None:
    # The tail ran only inside the broker's subscription: with Redis down, 0 of 6 events reached open sockets,
    # and a relay started while it was down lost them for good.
    database = store.database
    broker = DownTransport()
    relay = EventRelay(
        Hub(Metrics()),
        broker,
        partial(open_tail, database.bridge, tail_connector(database.dsn)),
        poll_seconds=0.1,
    )
    scene = await Scene(store).setup()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay.run)
        with trio.fail_after(WAIT):
            while relay.cursor is None:  # noqa: ASYNC110 (no subscription to wait on: the tail has started)
                await trio.sleep(0.01)
        with relay.hub.subscribe(scene.author) as mailbox:
            viewers = [await scene.view() for _ in range(6)]
            for _ in viewers:
                relay.wake()
            assert [await next_viewer(mailbox) for _ in viewers] == viewers
            assert mailbox.close_reason is None
        assert broker.attempts >= 1
        assert not relay.listening
        nursery.cancel_scope.cancel("test done")


async def slow_script(_client: Any) -> None:
    await trio.sleep(1)


@pytest.mark.redis
async def test_redis_relay_keeps_going_when_the_shared_breaker_trips(
    store: Store, redis_url: str, redis_prefix: str
) -> None:
    async with (
        open_redis(redis_url, key_prefix=redis_prefix, io_seconds=0.1) as link_a,
        open_redis(redis_url, key_prefix=redis_prefix, io_seconds=0.1) as link_b,
    ):
        assert link_a is not None
        assert link_b is not None
        a, b = redis_relay(store, link_a, poll_seconds=60), redis_relay(store, link_b, poll_seconds=60)
        scene = await Scene(store).setup()
        async with running(a, b):
            with a.hub.subscribe(scene.author) as on_a:
                # One slow call of a rate-limit script trips B's shared breaker.
                with pytest.raises(RedisUnavailable):
                    await link_b.execute(slow_script)
                assert not link_b.up
                viewer = await scene.view()
                b.wake()
                assert await next_viewer(on_a) == viewer
                assert on_a.close_reason is None
                assert b.listening


class CountingTransport:
    """A transport that counts its subscriptions: the relay may lose one and subscribe again (its backoff can be
    a few milliseconds) faster than a test could see `listening` turn False by polling."""

    def __init__(self, inner: RedisTransport) -> None:
        self.inner = inner
        self.name = inner.name
        self.opened = 0

    @asynccontextmanager
    async def open(self, feed: Feed) -> AsyncIterator[Any]:
        self.opened += 1
        async with self.inner.open(feed) as session:
            yield session


@pytest.mark.redis
async def test_redis_relay_resubscribes_when_its_subscription_is_killed(store: Store, redis_process: Any) -> None:
    async with open_redis(redis_process.url, key_prefix="t:") as link:
        assert link is not None
        transport = CountingTransport(RedisTransport(link, link.key("events")))
        database = store.database
        relay = EventRelay(Hub(Metrics()), transport, partial(open_tail, database.bridge, tail_connector(database.dsn)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.run)
            await listening(relay)
            assert transport.opened == 1
            await link.client.client_kill(type_="pubsub")
            with trio.fail_after(WAIT):
                while transport.opened < 2:  # noqa: ASYNC110 (the relay subscribes again; nothing to wait on)
                    await trio.sleep(0.05)
            await listening(relay)
            nursery.cancel_scope.cancel("test done")


class FloodTransport:
    """A broker that delivers a storm of hints at once (more than the feed holds), and echoes each one."""

    name = "flood"

    def __init__(self) -> None:
        self.feed: Feed | None = None

    @asynccontextmanager
    async def open(self, feed: Feed) -> AsyncIterator[Any]:
        self.feed = feed
        for _ in range(3 * feed.size):
            feed.offer("someone else")
        yield self

    async def publish(self, hint: str) -> None:
        assert self.feed is not None
        self.feed.offer(hint)
        await trio.lowlevel.checkpoint()


async def test_a_feed_overflow_closes_no_socket_and_loses_no_event(store: Store) -> None:
    database = store.database
    relay = EventRelay(
        Hub(Metrics()), FloodTransport(), partial(open_tail, database.bridge, tail_connector(database.direct_dsn))
    )
    scene = await Scene(store).setup()
    async with running(relay):
        with relay.hub.subscribe(scene.author) as mailbox:
            viewer = await scene.view()
            relay.wake()
            assert await next_viewer(mailbox) == viewer
            assert mailbox.close_reason is None


async def test_the_horizon_age_gauge_shows_how_long_events_wait_for_a_long_transaction(
    store: Store, database_url: str
) -> None:
    relay = pg_relay(store, f"events_{uuid.uuid4().hex[:8]}", poll_seconds=0.1)
    gauge = relay.hub.metrics.events_horizon_age
    scene = await Scene(store).setup()
    async with sql_connection(database_url) as blocker, running(relay):
        with relay.hub.subscribe(scene.author) as mailbox:
            # A transaction left open (it holds an xid) holds the horizon back, and the event with it.
            await blocker.execute("BEGIN")
            await blocker.fetchval("SELECT pg_current_xact_id()")
            viewer = await scene.view()
            relay.wake()
            with trio.fail_after(WAIT):
                while gauge._value.get() < 0.3:  # noqa: ASYNC110 (a gauge has nothing to wait on)
                    await trio.sleep(0.05)
            assert nothing_more(mailbox)
            await blocker.execute("ROLLBACK")
            assert await next_viewer(mailbox) == viewer
            with trio.fail_after(WAIT):
                while gauge._value.get() != 0:  # noqa: ASYNC110
                    await trio.sleep(0.05)


async def test_the_relay_and_the_access_push_connect_to_the_direct_url(database_url, tmp_path, settings) -> None:
    """Their connections hold a session (LISTEN, the tail): behind a transaction pooler they go around it, to
    DATABASE_DIRECT_URL. Pointed at a port where nothing listens, they fail there while the pool works."""
    nowhere = "postgres://stories@127.0.0.1:1/nowhere"
    async with open_database(database_url, data_dir=tmp_path, pool_size=1, direct_url=nowhere) as database:
        hub = Hub(Metrics())
        # Connected to the pool's database instead, they would run on: the deadline turns that into a failure.
        with trio.fail_after(WAIT), pytest.raises(StoreUnavailable, match="the event tail failed"):
            await build_relay(hub, database=database, redis=None).run()
        clock = FixedClock(START)
        callers = Callers(TokenIssuer(TEST_JWT_SECRET, 60, clock), SessionStore(database))
        watcher = build_access_watcher(callers, hub, clock, database=database, redis=None, settings=settings)
        with trio.fail_after(WAIT), pytest.raises(RelayDisconnected, match="the relay connection failed"):
            await watcher.listen()
