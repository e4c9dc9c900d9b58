"""EventRelay: delivers the event log to this process's sockets, and wakes the other processes (STYLE R16).

(Over 450 lines on purpose: the relay and its two broker transports, with their asyncio sides, change together
and serve nothing else.)

Events are stored rows (first views and reactions, stories/store/events.py). The relay tails them: it reads
every author's events after its cursor, in id order, from a connection of its own, and hands each to the hub.
What travels between processes is only a wake-up ("read the log now"), through a broker: PostgreSQL `NOTIFY`,
or Redis `PUBLISH` when Redis is configured.

    request handler --commit--> PostgreSQL        --wake()--> this relay: read the log now; hint the others
    broker --hint--> feed (1024, drop and mark) --> run(): wake the tail
    tail: read after cursor (up to the horizon) --> hub.publish(event), in id order --> mailboxes

So nothing depends on a message getting through: a lost, late or repeated hint costs latency, never an event,
and never a duplicate (the cursor only moves forward). Whatever the hints do, the tail reads the log every
`poll_seconds`, whether or not the broker is up: a broker that fails is resubscribed with backoff beside the
tail. A relay that restarts (its database connection failed) keeps its cursor and carries on where it stopped:
no socket is closed, and no event a socket is owed is skipped.

Health is the relay's own: each hint (and, when idle, a probe every `keepalive_seconds`) must come back to this
process through the broker within `io_seconds`, or the subscription is declared dead and replaced. The other
processes read the log on a hint, not on a probe.
"""

from __future__ import annotations

import uuid
from collections import deque
from contextlib import asynccontextmanager, suppress
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import asyncpg
import structlog
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from stories.backoff import Backoff
from stories.errors import StoriesError
from stories.store.bridge import close_own_connection, own_connection_crossing
from stories.store.events import open_tail, tail_connector

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    from stories.actors.hub import Hub
    from stories.domain import EventId
    from stories.redis import RedisLink
    from stories.store.bridge import Bridge
    from stories.store.database import Database
    from stories.store.events import EventTail

__all__ = [
    "DEFAULT_CHANNEL",
    "EventRelay",
    "Feed",
    "Overflow",
    "PostgresTransport",
    "RedisTransport",
    "RelayDisconnected",
    "build_relay",
    "postgres_connector",
]

log = structlog.get_logger()

DEFAULT_CHANNEL = "stories_events"
FEED_SIZE = 1024
# An idle subscription is probed this often, so a silently dead one is noticed and replaced.
DEFAULT_KEEPALIVE_SECONDS = 5.0
# A hint that has not come back, or a read of the log, slower than this means the connection is unusable.
DEFAULT_IO_SECONDS = 5.0
# The log is read this often whatever the hints say (a net under lost hints and unrelated transactions).
DEFAULT_POLL_SECONDS = 1.0
# While rows committed before a wake-up may still be above the horizon, read again after this, doubling.
SETTLE_SECONDS = 0.002
# A horizon held back this long (a transaction left open) is logged: events wait for it.
STALL_WARNING_SECONDS = 10.0
CLOSE_SECONDS = 2.0
WAITING_GRANULARITY_SECONDS = 1.0
# Between attempts to subscribe to a broker that is down (full jitter); the tail reads the log meanwhile.
BROKER_BACKOFF_INITIAL = 0.5
BROKER_BACKOFF_CAP = 10.0
RELAY_APPLICATION_NAME = "stories-relay"
# Ends a probe: a process checking its own subscription, which the other processes ignore (see `_hint_loop`).
PROBE_SUFFIX = ":probe"


class RelayDisconnected(StoriesError):
    """The relay's subscription ended or its connections failed; the supervisor restarts the relay."""


@dataclass(frozen=True, slots=True)
class Overflow:
    """Marks the place in the feed where records were dropped because the feed was full."""


OVERFLOW = Overflow()


class Feed:
    """Subscription -> relay: a bounded channel (FEED_SIZE) filled by a synchronous callback.

    When full, a record is dropped and counted, and one `Overflow` marker is queued in a slot kept for it.
    Records are hints, so a dropped one loses nothing: the marker wakes the tail like any hint. `close()` ends
    the stream (connection lost); the relay still reads what was queued before the end.
    """

    def __init__(self, size: int = FEED_SIZE) -> None:
        self.size = size
        self.dropped = 0
        self._marked = False
        self._send, self.receive = trio.open_memory_channel[str | Overflow](size + 1)

    def offer(self, payload: str) -> None:
        """Queue a record without blocking (called from a LISTEN callback or the pub/sub reader)."""
        try:
            if self._send.statistics().current_buffer_used < self.size:
                self._send.send_nowait(payload)
                return
            self.dropped += 1
            if not self._marked:
                self._marked = True
                self._send.send_nowait(OVERFLOW)
        except trio.ClosedResourceError:
            # A notification racing the connection's end: the relay is restarting.
            return

    def take_dropped(self) -> int:
        """Called by the relay on reading the marker: how many were lost; re-arms the marker."""
        dropped, self.dropped, self._marked = self.dropped, 0, False
        return dropped

    def close(self) -> None:
        self._send.close()


class RelaySession(Protocol):
    async def publish(self, hint: str) -> None:
        """Send a hint to every process, this one included. Raises RelayDisconnected if it cannot."""
        ...


class RelayTransport(Protocol):
    name: str

    def open(self, feed: Feed) -> AbstractAsyncContextManager[RelaySession]:
        """Subscribe; incoming hints go to `feed`, and `feed.close()` is called when the subscription ends."""
        ...


@dataclass(eq=False)
class EventRelay:
    """Owns the tail's cursor and connection, and the broker subscription. Inbox: `wake()` (a flag, never
    full). Backpressure: the feed drops and marks (STYLE R5), the hub per mailbox. Restart: reconnects and
    reads on from the same cursor; nothing is lost and no socket is closed.
    """

    hub: Hub
    transport: RelayTransport
    open_log: Callable[[], AbstractAsyncContextManager[EventTail]]
    _: KW_ONLY
    origin: str = field(default_factory=lambda: uuid.uuid4().hex)
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    io_seconds: float = DEFAULT_IO_SECONDS
    poll_seconds: float = DEFAULT_POLL_SECONDS
    cursor: EventId | None = field(init=False, default=None)
    _read_wanted: trio.Event = field(init=False, default_factory=trio.Event)
    _hint_wanted: trio.Event = field(init=False, default_factory=trio.Event)
    # Wake-ups counted, and how many of them a hint has covered: the rest are owed to the other processes.
    _wakes: int = field(init=False, default=0)
    _hinted: int = field(init=False, default=0)
    _echo: trio.Event = field(init=False, default_factory=trio.Event)
    _listening: bool = field(init=False, default=False)
    _changed: trio.Event = field(init=False, default_factory=trio.Event)
    # Between subscriptions to the broker; reset once a hint has come back through one.
    _backoff: Backoff = field(
        init=False, default_factory=partial(Backoff, initial=BROKER_BACKOFF_INITIAL, cap=BROKER_BACKOFF_CAP)
    )

    @property
    def _probe(self) -> str:
        return self.origin + PROBE_SUFFIX

    @property
    def listening(self) -> bool:
        """True while the subscription is up and the log is being read (readiness: /readyz, tests)."""
        return self._listening

    async def wait_listening(self) -> None:
        """Block until the subscription is up (tests, and a caller that wants to know events flow)."""
        while not self._listening:
            await self._changed.wait()

    def wake(self) -> None:
        """Views or reactions may have been committed: read the log now, and tell the other processes to.

        Synchronous, never blocks or raises; call it after the store call, also when that call failed or was
        cancelled (its transaction may still have committed). Wake-ups coalesce.
        """
        self._read_wanted.set()
        self._hint_wanted.set()
        self._wakes += 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Tail the log, and keep a broker subscription beside it. The tail runs whatever the broker does
        (hints only wake it; without them it reads every `poll_seconds`): a broker that is down or drops the
        subscription is resubscribed with backoff here, and costs latency, never delivery. Only the tail's own
        database connection failing ends the run (RelayDisconnected: the supervisor restarts it, and the next
        incarnation reads on from the same cursor)."""
        # Started before connecting: a broker or database that is down at boot must not fail the boot; the
        # supervisor retries the connection.
        task_status.started()
        try:
            async with self.open_log() as tail:
                if self.cursor is None:
                    with trio.fail_after(self.io_seconds):
                        self.cursor = await tail.start()
                    self.hub.advance(self.cursor)
                self._read_wanted.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._tail_loop, tail)
                    await self._broker_loop()
        except* trio.TooSlowError as group:
            raise RelayDisconnected("the relay's database connection hung") from group

    async def _broker_loop(self) -> NoReturn:
        """Subscribe to the broker; after any loss of the subscription, subscribe again after a backoff."""
        while True:
            try:
                await self._subscribed()
            except* RelayDisconnected as group:
                log.warning("relay.broker_lost", transport=self.transport.name, error=repr(group.exceptions[0]))
            await trio.sleep(self._backoff.next_delay())

    async def _subscribed(self) -> NoReturn:
        feed = Feed()
        async with self.transport.open(feed) as session:
            # Hints sent while this process was not subscribed are lost: read the log at once.
            self._read_wanted.set()
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._hint_loop, session)
                    log.info("relay.listening", transport=self.transport.name, origin=self.origin)
                    self._set_listening(True)
                    async for item in feed.receive:
                        self._heard(item, feed)
                    raise RelayDisconnected(f"the {self.transport.name} subscription ended")
            finally:
                self._set_listening(False)
                await self._flush(session)

    async def _flush(self, session: RelaySession) -> None:
        """On the way out (shutdown included), send a pending hint: the other processes read at once."""
        owed = self._wakes
        if owed == self._hinted:
            return
        with trio.move_on_after(CLOSE_SECONDS, shield=True), suppress(RelayDisconnected):
            await session.publish(self.origin)
            self._hinted = owed

    def _set_listening(self, listening: bool) -> None:
        self._listening = listening
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _heard(self, item: str | Overflow, feed: Feed) -> None:
        if isinstance(item, Overflow):
            log.info("relay.feed_overflow", transport=self.transport.name, dropped=feed.take_dropped())
        elif item in (self.origin, self._probe):
            self._echo.set()
            return
        elif item.endswith(PROBE_SUFFIX):
            return  # another process checking its subscription: nothing was committed
        self._read_wanted.set()

    async def _tail_loop(self, tail: EventTail) -> NoReturn:
        """Read the log after the cursor and publish it, whenever woken and every `poll_seconds`.

        A read right after a wake-up notes the next transaction id then: every row committed before the wake
        is below it, and is served once the horizon has passed it. Until then the log is read again after a
        short, doubling delay (the transactions in the way are normally a few milliseconds long).
        """
        awaited: int | None = None
        settle = SETTLE_SECONDS
        stalled_since: float | None = None
        waiting = _Waiting()
        horizon_age = self.hub.metrics.events_horizon_age
        while True:
            woken = self._read_wanted.is_set()
            self._read_wanted = trio.Event()
            assert self.cursor is not None  # set before this loop starts
            with trio.fail_after(self.io_seconds):
                page = await tail.read(self.cursor)
            for event in page.events:
                self.hub.publish(event)
            self.cursor = page.cursor
            self.hub.advance(page.cursor)
            if page.full:
                continue
            if woken:
                awaited = max(awaited or 0, page.next_xid)
                waiting.woken(page.next_xid)
            horizon_age.set(waiting.age(page.horizon))
            if awaited is not None and page.horizon >= awaited:
                awaited, settle, stalled_since = None, SETTLE_SECONDS, None
            if awaited is None:
                wait = self.poll_seconds
            else:
                wait, settle = settle, min(settle * 2, self.poll_seconds)
                stalled_since = self._stalled(stalled_since, page.horizon)
            with trio.move_on_after(wait):
                await self._read_wanted.wait()

    @staticmethod
    def _stalled(since: float | None, horizon: int) -> float:
        now = trio.current_time()
        if since is None:
            return now
        if now - since >= STALL_WARNING_SECONDS:
            log.warning("events.horizon_stalled", horizon=horizon, seconds=round(now - since, 1))
            return now
        return since

    async def _hint_loop(self, session: RelaySession) -> NoReturn:
        """Send coalesced hints, one at a time, each awaited back through the broker; probe when idle."""
        while True:
            with trio.move_on_after(self.keepalive_seconds):
                await self._hint_wanted.wait()
            self._hint_wanted = trio.Event()
            owed = self._wakes
            # A hint wakes every other process's tail; with nothing owed it is a probe, which they ignore: N
            # idle processes would otherwise read the log N x (N - 1) times per keepalive (bench/scaleout.md).
            message = self.origin if owed != self._hinted else self._probe
            echo = self._echo = trio.Event()
            with trio.move_on_after(self.io_seconds) as waiting:
                await session.publish(message)
                self._hinted = owed
                await echo.wait()
                self._backoff.reset()
            if waiting.cancelled_caught:
                raise RelayDisconnected(
                    f"a hint did not come back through {self.transport.name} within {self.io_seconds:g} s"
                )


class _Waiting:
    """For the horizon-age gauge: since when each wake-up's transactions have waited for the horizon, oldest
    first. Wake-ups within WAITING_GRANULARITY_SECONDS share an entry (the oldest time, the latest xid), so the
    queue stays short during a long stall, and the age errs by at most that much, upwards."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: deque[tuple[int, float]] = deque()

    def woken(self, next_xid: int) -> None:
        now = trio.current_time()
        if self._entries and now - self._entries[-1][1] < WAITING_GRANULARITY_SECONDS:
            self._entries[-1] = (max(self._entries[-1][0], next_xid), self._entries[-1][1])
        else:
            self._entries.append((next_xid, now))

    def age(self, horizon: int) -> float:
        """Seconds the oldest events still below `horizon`'s reach have waited; 0 when none wait."""
        while self._entries and self._entries[0][0] <= horizon:
            self._entries.popleft()
        return trio.current_time() - self._entries[0][1] if self._entries else 0.0


def build_relay(
    hub: Hub,
    *,
    database: Database,
    redis: RedisLink | None,
    channel: str = DEFAULT_CHANNEL,
) -> EventRelay:
    """The process's relay: hints through Redis pub/sub when Redis is configured, else LISTEN/NOTIFY."""
    open_log = partial(open_tail, database.bridge, tail_connector(database.direct_dsn))
    if redis is not None:
        return EventRelay(hub, RedisTransport(redis, redis.key(channel)), open_log)
    return EventRelay(
        hub, PostgresTransport(postgres_connector(database.direct_dsn), channel, database.bridge), open_log
    )


# ---- Redis pub/sub (coredis is anyio-based: native on trio) ----------------------------------------------


class RedisTransport:
    """Subscribes on the link's client (a pub/sub connection of its own) and publishes on it directly.

    Not through `link.execute`: that breaker is shared with rate limits and caches, and one slow call of
    theirs would stop the relay's hints. The relay judges its own connection (by the echo of its hints).
    """

    name = "redis"

    def __init__(self, link: RedisLink, channel: str) -> None:
        self.link = link
        self.channel = channel

    @asynccontextmanager
    async def open(self, feed: Feed) -> AsyncIterator[RelaySession]:
        # No retry policy: coredis would otherwise reconnect silently, and the gap would go unnoticed.
        pubsub = self.link.client.pubsub(
            channels=[self.channel], ignore_subscribe_messages=True, retry_policy=NoRetryPolicy()
        )
        try:
            async with pubsub, trio.open_nursery() as nursery:
                nursery.start_soon(self._read, pubsub, feed)
                yield _RedisSession(self.link.client, self.channel)
                nursery.cancel_scope.cancel("relay session closed")
        except* (RedisError, OSError) as group:
            raise RelayDisconnected(f"redis relay subscription failed: {group.exceptions[0]!r}") from group

    @staticmethod
    async def _read(pubsub: AsyncIterator[Any], feed: Feed) -> None:
        try:
            async for message in pubsub:
                data = message["data"]
                feed.offer(data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data))
        finally:
            feed.close()


@dataclass(frozen=True, slots=True)
class _RedisSession:
    client: Any
    channel: str

    async def publish(self, hint: str) -> None:
        try:
            await self.client.publish(self.channel, hint)
        except (RedisError, OSError) as exc:
            raise RelayDisconnected(f"redis relay publish failed: {exc!r}") from exc


# ---- PostgreSQL LISTEN/NOTIFY --------------------------------------------------------------------------
# The LISTEN connection is the relay's own (outside the store's pool), so its asyncio side lives here, below,
# in `aio_*` functions with no trio calls; PostgresTransport crosses into each of them once, through the store's
# bridge (the connection lives on the bridge's asyncio thread, like the pool's).


def postgres_connector(dsn: str) -> Callable[[], Awaitable[asyncpg.Connection[Any]]]:
    """A connection factory for the relay's dedicated connection (an asyncio coroutine function).

    The connection is named in `pg_stat_activity`, so an operator can tell it from the pool's.
    """
    return partial(asyncpg.connect, dsn, server_settings={"application_name": RELAY_APPLICATION_NAME})


async def aio_listen(
    connect: Callable[[], Awaitable[asyncpg.Connection[Any]]],
    channel: str,
    on_payload: Callable[[str], None],
    on_terminated: Callable[[], None],
) -> asyncpg.Connection[Any]:
    """Open a connection and LISTEN on `channel`. The callbacks run on the bridge's thread: pass them through
    `Bridge.to_trio`."""
    conn = await connect()
    try:
        conn.add_termination_listener(lambda _conn: on_terminated())
        await conn.add_listener(channel, lambda _conn, _pid, _channel, payload: on_payload(str(payload)))
    except BaseException:
        conn.terminate()
        raise
    return conn


async def aio_notify(conn: asyncpg.Connection[Any], channel: str, hint: str) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", channel, hint)


# A failure of the relay's connection is RelayDisconnected: a crash, hence a restart.
_cross = own_connection_crossing(RelayDisconnected, "the relay connection failed")


class PostgresTransport:
    """A dedicated LISTEN connection (outside the pool; the callback only queues), NOTIFY on the same one.

    Only the relay's hint loop sends statements on it, so NOTIFYs never overlap.
    """

    name = "postgres"

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection[Any]]], channel: str, bridge: Bridge) -> None:
        self.connect = connect
        self.channel = channel
        self.bridge = bridge

    @asynccontextmanager
    async def open(self, feed: Feed) -> AsyncIterator[RelaySession]:
        bridge = self.bridge
        conn: asyncpg.Connection[Any] = await _cross(
            bridge, aio_listen, self.connect, self.channel, bridge.to_trio(feed.offer), bridge.to_trio(feed.close)
        )
        try:
            yield _PostgresSession(conn, self.channel, bridge)
        finally:
            feed.close()
            await close_own_connection(bridge, conn, _cross)


@dataclass(frozen=True, slots=True)
class _PostgresSession:
    conn: asyncpg.Connection[Any]
    channel: str
    bridge: Bridge

    async def publish(self, hint: str) -> None:
        await _cross(self.bridge, aio_notify, self.conn, self.channel, hint)
