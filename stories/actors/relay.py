"""EventRelay: carries realtime events between server processes (DESIGN.md, STYLE R16).

A process delivers an event it causes to its own sockets at once (`publish` hands it to the local hub), and
sends it through a broker to every other process: PostgreSQL `NOTIFY` on one channel, or Redis `PUBLISH`
when Redis is configured. `run()` holds the subscription (a dedicated `LISTEN` connection outside the pool,
or a Redis pub/sub connection) and feeds what other processes sent into the local hub. Each record names
its origin process, so a process skips its own records coming back.

    request handler --publish()--> local hub (sync)
                    \\--outbox (1024, drop when full)--> run(): NOTIFY / PUBLISH in batches
    broker --LISTEN callback / pub-sub--> feed (1024, drop and mark Overflow) --> run() --> local hub

If the subscription dies, `run()` raises and the supervisor restarts it. Events sent by other processes
while it was down are lost to this process's sockets, so on reconnecting the relay logs `relay.gap` and the
hub closes every socket with 1012 (reconnect and refresh). A feed overflow does the same. Events waiting in
the outbox survive a restart (the outbox belongs to the relay object, not to one incarnation).
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import asyncpg
import orjson
import structlog
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from stories.actors.messages import MalformedEvent, event_from_relay
from stories.errors import StoriesError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
    from contextlib import AbstractAsyncContextManager

    from stories.actors.hub import Hub
    from stories.actors.messages import Event
    from stories.redis import RedisLink
    from stories.store.bridge import Bridge

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
OUTBOX_SIZE = 1024
PUBLISH_BATCH = 64
# PostgreSQL refuses NOTIFY payloads of 8000 bytes or more; our records are a few hundred.
MAX_PAYLOAD_BYTES = 7_999
# An idle subscription is probed this often, so a silently dead connection is noticed and replaced.
DEFAULT_KEEPALIVE_SECONDS = 15.0
# One NOTIFY batch or probe slower than this means the connection is unusable.
DEFAULT_IO_SECONDS = 5.0
CLOSE_SECONDS = 2.0
RELAY_APPLICATION_NAME = "stories-relay"


class RelayDisconnected(StoriesError):
    """The relay's subscription ended or its connection failed; the supervisor restarts the relay."""


@dataclass(frozen=True, slots=True)
class Overflow:
    """Marks the place in the feed where records were dropped because the feed was full."""


OVERFLOW = Overflow()


class Feed:
    """Subscription -> relay: a bounded channel (FEED_SIZE) filled by a synchronous callback.

    When full, a record is dropped and counted, and one `Overflow` marker is queued in a slot kept for it,
    so the relay learns of the loss at the place it happened. `close()` ends the stream (connection lost);
    the relay still reads what was queued before the end.
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
            # A notification racing the connection's end: the relay is restarting and will resync.
            return

    def take_dropped(self) -> int:
        """Called by the relay on reading the marker: how many were lost; re-arms the marker."""
        dropped, self.dropped, self._marked = self.dropped, 0, False
        return dropped

    def close(self) -> None:
        self._send.close()


class RelaySession(Protocol):
    async def publish(self, payloads: Sequence[str]) -> None:
        """Send the records to every process (in order). Raises if the connection is unusable."""
        ...

    async def keepalive(self) -> None:
        """Prove the connection is alive. Raises if it is not."""
        ...


class RelayTransport(Protocol):
    name: str

    def open(self, feed: Feed) -> AbstractAsyncContextManager[RelaySession]:
        """Subscribe; incoming records go to `feed`, and `feed.close()` is called when the subscription ends."""
        ...


def _encode(origin: str, event: Event) -> str:
    return orjson.dumps({"origin": origin, "event": event.relay_record()}).decode("utf-8")


def _decode(payload: str) -> tuple[str, Event]:
    try:
        envelope = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedEvent(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict) or not isinstance(envelope.get("origin"), str):
        raise MalformedEvent("a relay envelope is an object with an origin")
    return envelope["origin"], event_from_relay(envelope.get("event"))


class EventRelay:
    """Owns the broker subscription and the outbox of events to send. Inbox: the outbox (OUTBOX_SIZE,
    drop and log when full: an event is never worth blocking a request). Backpressure: the feed drops
    and marks (STYLE R5). Restart: reconnects, logs `relay.gap`, makes clients resync; the outbox and a
    batch that failed mid-send are kept (a batch may then arrive twice; the event id tells them apart).
    """

    def __init__(
        self,
        hub: Hub,
        transport: RelayTransport,
        *,
        origin: str | None = None,
        keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        io_seconds: float = DEFAULT_IO_SECONDS,
    ) -> None:
        self.hub = hub
        self.transport = transport
        self.origin = origin or uuid.uuid4().hex
        self.keepalive_seconds = keepalive_seconds
        self.io_seconds = io_seconds
        self.outbox_dropped = 0
        self._outbox_send, self._outbox_recv = trio.open_memory_channel[str](OUTBOX_SIZE)
        self._unsent: list[str] = []
        self._down_since: float | None = None
        self._listening = False
        self._changed = trio.Event()

    @property
    def listening(self) -> bool:
        """True while the subscription is up (for /healthz and tests)."""
        return self._listening

    @property
    def outbox_backlog(self) -> int:
        return self._outbox_send.statistics().current_buffer_used + len(self._unsent)

    async def wait_listening(self) -> None:
        """Block until the subscription is up (tests, and a caller that wants to know events flow)."""
        while not self._listening:
            await self._changed.wait()

    def publish(self, event: Event) -> None:
        """Deliver `event` to this process's sockets now and queue it for every other process.

        Synchronous and never blocks or raises: call it after the view/reaction is committed. If the
        outbox is full (the broker is down or far behind) other processes miss the event; it is logged.
        """
        self.hub.publish(event.author_id, event)
        payload = _encode(self.origin, event)
        if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
            log.error("relay.too_large", event_id=str(event.id), type=event.TYPE, size=len(payload))
            return
        try:
            self._outbox_send.send_nowait(payload)
        except trio.WouldBlock:
            self.outbox_dropped += 1
            log.warning("relay.outbox_full", event_id=str(event.id), dropped=self.outbox_dropped)
        else:
            if self.outbox_dropped:
                log.info("relay.outbox_recovered", dropped=self.outbox_dropped)
                self.outbox_dropped = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        # Started before connecting: local delivery and the outbox work without the broker, and a broker
        # that is down at boot must not fail the boot; the supervisor retries the connection.
        task_status.started()
        try:
            feed = Feed()
            async with self.transport.open(feed) as session:
                self._connected()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._publish_loop, session)
                    async for item in feed.receive:
                        self._receive(item, feed)
                    raise RelayDisconnected(f"the {self.transport.name} subscription ended")
        except Exception:
            # A crash, not a cancel: remember since when, to report the gap on reconnecting.
            if self._down_since is None:
                self._down_since = trio.current_time()
            raise
        finally:
            self._set_listening(False)

    def _connected(self) -> None:
        if self._down_since is not None:
            down = trio.current_time() - self._down_since
            log.warning("relay.gap", transport=self.transport.name, down_seconds=round(down, 3))
            self._down_since = None
            self.hub.resync()
        log.info("relay.listening", transport=self.transport.name, origin=self.origin)
        self._set_listening(True)

    def _set_listening(self, listening: bool) -> None:
        self._listening = listening
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _receive(self, item: str | Overflow, feed: Feed) -> None:
        if isinstance(item, Overflow):
            log.warning("relay.overflow", transport=self.transport.name, dropped=feed.take_dropped())
            self.hub.resync()
            return
        try:
            origin, event = _decode(item)
        except MalformedEvent as exc:
            log.warning("relay.malformed", error=str(exc))
            return
        if origin != self.origin:
            self.hub.publish(event.author_id, event)

    async def _publish_loop(self, session: RelaySession) -> NoReturn:
        while True:
            if not self._unsent:
                with trio.move_on_after(self.keepalive_seconds):
                    batch = [await self._outbox_recv.receive()]
                    while len(batch) < PUBLISH_BATCH:
                        try:
                            batch.append(self._outbox_recv.receive_nowait())
                        except trio.WouldBlock:
                            break
                    self._unsent = batch
            with trio.fail_after(self.io_seconds):
                if self._unsent:
                    await session.publish(self._unsent)
                    self._unsent = []
                else:
                    await session.keepalive()


def build_relay(
    hub: Hub,
    *,
    connect: Callable[[], Awaitable[asyncpg.Connection[Any]]],
    bridge: Bridge,
    redis: RedisLink | None,
    channel: str = DEFAULT_CHANNEL,
) -> EventRelay:
    """The process's relay: Redis pub/sub when Redis is configured, else PostgreSQL LISTEN/NOTIFY."""
    if redis is not None:
        return EventRelay(hub, RedisTransport(redis, redis.key(channel)))
    return EventRelay(hub, PostgresTransport(connect, channel, bridge))


# ---- Redis pub/sub (coredis is anyio-based: native on trio) ----------------------------------------------


class RedisTransport:
    """Subscribes on the link's client (a pub/sub connection of its own); publishes through `link.execute`."""

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
                yield _RedisSession(self.link, self.channel)
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
    link: RedisLink
    channel: str

    async def publish(self, payloads: Sequence[str]) -> None:
        for payload in payloads:
            await self.link.execute(partial(_redis_publish, channel=self.channel, payload=payload))

    async def keepalive(self) -> None:
        await self.link.execute(_redis_ping)


async def _redis_publish(client: Any, *, channel: str, payload: str) -> int:
    receivers: int = await client.publish(channel, payload)
    return receivers


async def _redis_ping(client: Any) -> None:
    await client.ping()


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


async def aio_notify(conn: asyncpg.Connection[Any], channel: str, payloads: Sequence[str]) -> None:
    """NOTIFY every payload, in order, in one round trip (one implicit transaction)."""
    await conn.execute("SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload", channel, list(payloads))


async def aio_ping(conn: asyncpg.Connection[Any]) -> None:
    await conn.execute("SELECT 1")


async def aio_close(conn: asyncpg.Connection[Any]) -> None:
    await conn.close()


async def _cross(bridge: Bridge, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
    """One bridge crossing; connection failures become RelayDisconnected (a crash, hence a restart).

    An asyncio CancelledError with no trio cancel behind it means the loop tore the operation down; as a
    BaseException it would end the process instead of restarting the relay (STYLE R15).
    """
    try:
        return await bridge.run(fn, *args)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise RelayDisconnected(f"postgres relay connection failed: {exc!r}") from exc
    except asyncio.CancelledError as exc:
        raise RelayDisconnected("postgres relay operation was interrupted") from exc


class PostgresTransport:
    """A dedicated LISTEN connection (outside the pool; the callback only queues), NOTIFY on the same one.

    Only the relay's publish loop sends statements on it, so NOTIFYs and keepalive probes never overlap.
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
            with trio.move_on_after(CLOSE_SECONDS, shield=True):
                try:
                    await _cross(bridge, aio_close, conn)
                except RelayDisconnected:
                    bridge.call_soon(conn.terminate)
            if not conn.is_closed():
                bridge.call_soon(conn.terminate)


@dataclass(frozen=True, slots=True)
class _PostgresSession:
    conn: asyncpg.Connection[Any]
    channel: str
    bridge: Bridge

    async def publish(self, payloads: Sequence[str]) -> None:
        await _cross(self.bridge, aio_notify, self.conn, self.channel, payloads)

    async def keepalive(self) -> None:
        await _cross(self.bridge, aio_ping, self.conn)
