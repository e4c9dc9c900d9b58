"""open_database(): the PostgreSQL the settings name (or an embedded one), as a `Database` of asyncpg connections.

Every operation goes through `Database.call`: a trio-side slot per pool connection, taken with a deadline
(DB_ACQUIRE_TIMEOUT_SECONDS -> 503 overloaded), then one bridge crossing (bridge.py), with asyncpg's errors
translated at the crossing (STYLE R15). Health checks use a connection of their own, so a busy pool is never
reported as a dead database.

Behind a transaction pooler (PgBouncer, pool_mode=transaction), DATABASE_URL names the pooler and `direct_url`
(DATABASE_DIRECT_URL) the server: consecutive transactions of one pool connection may then run on different
server sessions, so the pool keeps no prepared statements (asyncpg re-parses each statement, unnamed, inside its
own round trips), and what needs a session of its own (`call_direct`, `direct_dsn`) connects around the pooler.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import asynccontextmanager
from functools import partial, update_wrapper
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import asyncpg
import structlog
import trio

from stories.backoff import Backoff
from stories.errors import Overloaded, StoreUnavailable
from stories.store.bridge import POOL_FAILURES, Bridge, cross, open_bridge
from stories.store.embedded import EmbeddedPostgres

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine
    from pathlib import Path

__all__ = ["DEFAULT_ACQUIRE_TIMEOUT_SECONDS", "Database", "OnDatabase", "Query", "open_database"]

log = structlog.get_logger()

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_ACQUIRE_TIMEOUT_SECONDS = 2.0
POOL_CLOSE_SECONDS = 3.0
EMBEDDED_STOP_SECONDS = 10.0
CONNECT_RETRY_FIRST_SECONDS = 0.25
CONNECT_RETRY_CAP_SECONDS = 5.0
# API.md: an unreachable database is retried for at most 30 s at start, then the process exits 3.
CONNECT_DEADLINE_SECONDS = 30.0
HEALTH_CHECK_SECONDS = 2.0
# Dead peers: a connection whose other end vanished (a half-open TCP connection after a network cut or a host
# that died) would otherwise hold its pool slot until the kernel gives up, hours later. Both ends probe an idle
# connection after KEEPALIVE_IDLE_SECONDS, every KEEPALIVE_INTERVAL_SECONDS, KEEPALIVE_COUNT times; and data
# sent but never acknowledged fails the connection after USER_TIMEOUT_SECONDS.
KEEPALIVE_IDLE_SECONDS = 10
KEEPALIVE_INTERVAL_SECONDS = 5
KEEPALIVE_COUNT = 3
USER_TIMEOUT_SECONDS = 30


# No asyncio timer is armed per operation (trio-asyncio, the bridge before this one, kept every cancelled timer
# with the request context it held until its deadline: ~10 KB per request, bench/bridge.md), and deadlines live
# on the trio side anyway. No session state is ever set, so a released connection needs no reset round trip.
async def _no_reset(_: asyncpg.Connection[Any]) -> None:
    """Released connections skip `RESET ALL` and friends (asyncpg still rolls back an open transaction)."""


def _server_settings(statement_timeout: float | None) -> dict[str, str]:
    """The session settings of every pool connection: the server's side of the keepalive, and with a
    `statement_timeout` a bound on every statement and on a transaction left idle (a client that vanished
    mid-transaction would otherwise hold its locks, and the event horizon, forever)."""
    settings = {
        # No JIT: it pays off for long analytic queries, never for ours. The tray's statement
        # (stories/store/tray.py) is estimated far above jit_above_cost (it places authors with a few probes each,
        # each costed as a scan), and compiling it took ~10 s on 50,000 active stories (bench/feed_plans.md).
        "jit": "off",
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE_SECONDS),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL_SECONDS),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
    }
    if statement_timeout is not None:
        millis = str(max(1, round(statement_timeout * 1000)))
        settings["statement_timeout"] = millis
        settings["idle_in_transaction_session_timeout"] = millis
    return settings


async def _aio_keepalive(conn: asyncpg.Connection[Any]) -> None:
    """Turn on this end's TCP keepalive (asyncpg has no option for it). A unix socket has none to set."""
    # asyncpg keeps its transport private; the socket is reachable only through it.
    transport = getattr(conn, "_transport", None)
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_SECONDS * 1000)


_POOL_OPTIONS: dict[str, Any] = {
    "init": _aio_keepalive,
    "command_timeout": None,
    "max_inactive_connection_lifetime": 0,
    # Prepared statements stay cached (an LRU of 100 per connection) instead of expiring after 300 s, each expiry
    # a timer of its own, then prepared again.
    "max_cached_statement_lifetime": 0,
    "reset": _no_reset,
}
# Behind a transaction pooler a named prepared statement lives on one server session, and the next transaction
# may run on another ("prepared statement does not exist"). PgBouncer < 1.21 cannot track them (Debian 12 ships
# 1.18): no cache. bench/pooler.md has what it costs.
POOLED_STATEMENT_CACHE_SIZE = 0
STATEMENT_CACHE_SIZE = 100  # asyncpg's default


class Database:
    """The pool and its trio-side gate. Safe to share between tasks; every call is cancellable.

    `call(fn, *args)` runs `fn(pool, *args)` on the asyncio side. It first takes one of `pool_size` slots,
    waiting at most `acquire_timeout` (else `Overloaded`): the queue for connections is on the trio side, bounded
    in time, and the asyncio pool never has a waiter. A slot is given back when the asyncio work has really
    ended, so an abandoned call (its caller cancelled) never lets more work reach the pool than it has
    connections.
    """

    def __init__(
        self,
        bridge: Bridge,
        pool: asyncpg.Pool,
        dsn: str,
        *,
        pool_size: int,
        acquire_timeout: float,
        direct_dsn: str | None = None,
    ) -> None:
        self._bridge = bridge
        self._pool = pool
        self._slots = trio.Semaphore(pool_size)
        self._acquire_timeout = acquire_timeout
        self._health = _HealthLink(dsn)
        # Where the pool connects (the embedded server too; a pooler, when there is one).
        self.dsn = dsn
        # Where connections that hold session state connect (LISTEN, the event tail, `call_direct`): around a
        # transaction pooler, which would hand their next transaction to another session.
        self.direct_dsn = direct_dsn or dsn

    @property
    def bridge(self) -> Bridge:
        return self._bridge

    @property
    def pool_size(self) -> int:
        return self._pool.get_size()

    @property
    def pool_idle(self) -> int:
        return self._pool.get_idle_size()

    @property
    def slots_free(self) -> int:
        return self._slots.value

    async def call(
        self, fn: Callable[Concatenate[asyncpg.Pool, P], Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> R:
        with trio.move_on_after(self._acquire_timeout) as waiting:
            await self._slots.acquire()
        if waiting.cancelled_caught:
            log.warning("db.overloaded", operation=fn.__name__, waited_s=self._acquire_timeout)
            raise Overloaded("the service is overloaded; retry shortly", retry_after=1)
        # The bridge passes arguments by position; keywords are bound first, under `fn`'s name for the logs.
        target = update_wrapper(partial(fn, **kwargs), fn) if kwargs else fn
        return await self._cross(target, self._pool, *args, finished=self._slots.release)

    async def call_direct(self, fn: Callable[..., Coroutine[Any, Any, R]], *args: object) -> R:
        """`fn(pool, *args)` like `call`, on a one-connection pool of its own to `direct_dsn`, closed after: for
        work that holds session state across transactions (the migrations' advisory lock). Not gated by the
        pool's slots: it is not request work."""
        try:
            return await self._cross(_aio_with_direct_pool, self.direct_dsn, fn, *args)
        except (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
            # The pool's URL was accepted at start: only DATABASE_DIRECT_URL can name these.
            raise StoreUnavailable(f"DATABASE_DIRECT_URL was refused: {exc}") from exc

    async def ping(self) -> None:
        """One round trip on the health connection, at most HEALTH_CHECK_SECONDS; StoreUnavailable otherwise."""
        with trio.move_on_after(HEALTH_CHECK_SECONDS):
            return await self._cross(self._health.aio_ping)
        raise StoreUnavailable(f"the database did not answer within {HEALTH_CHECK_SECONDS:g} s")

    async def _cross(
        self, fn: Callable[..., Coroutine[Any, Any, R]], *args: object, finished: Callable[[], None] | None = None
    ) -> R:
        try:
            return await cross(
                self._bridge,
                fn,
                *args,
                failures=POOL_FAILURES,
                error=StoreUnavailable,
                lost="the database is unavailable; retry shortly",
                finished=finished,
            )
        except asyncpg.TransactionRollbackError as exc:
            # A deadlock or a serialization failure: PostgreSQL rolled the transaction back, so nothing was written
            # and the same request again normally succeeds (a 503 to retry, not a 500). No path of ours is known
            # to cause one (they take their locks in one order): the error line is for the bug it reveals.
            log.error("db.transaction_rolled_back", operation=fn.__name__, error=repr(exc))
            raise StoreUnavailable("the database rolled this request back (a conflict with another); retry") from exc

    async def close(self) -> None:
        await self._bridge.run(self._health.aio_close)
        await self._bridge.run(_aio_close_pool, self._pool)

    def terminate(self) -> None:
        """Drop every connection now (a close that did not finish in time)."""
        self._bridge.call_soon(self._pool.terminate)


class OnDatabase:
    """A facade of use cases on a Database (Store, Uploads ...); its `Query` attributes call through it."""

    def __init__(self, database: Database) -> None:
        self.database = database


class Query(Generic[P, R]):
    """A facade method that is one `Database.call` of `fn`, declared `feed = Query(aio_feed)`: called on a facade,
    it takes `fn`'s arguments after the pool, typed as `fn` declares them, and returns its result. The signature
    and the docstring are `fn`'s, written once."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[Concatenate[asyncpg.Pool, P], Coroutine[Any, Any, R]]) -> None:
        self.fn = fn

    @overload
    def __get__(self, facade: None, owner: type[OnDatabase]) -> Self: ...
    @overload
    def __get__(
        self, facade: OnDatabase, owner: type[OnDatabase] | None = None
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(
        self, facade: OnDatabase | None, owner: type[OnDatabase] | None = None
    ) -> Self | Callable[P, Coroutine[Any, Any, R]]:
        if facade is None:  # looked up on the class (help(), a test patching it)
            return self
        # A partial of the bound `call` is made in C and awaits `call` itself: no coroutine of its own.
        return partial(facade.database.call, self.fn)


class _HealthLink:
    """A connection of its own for health checks (asyncio side), reopened after any failure.

    Concurrent probes take turns: a connection runs one query at a time, and a probe that failed (or was
    abandoned) must not terminate the connection under another one's query. A turn is a `SELECT 1`, so turns are
    short; on a hung database each waiting probe is bounded by its caller's deadline (Database.ping).
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection[Any] | None = None
        self._turn = asyncio.Lock()

    async def aio_ping(self) -> None:
        async with self._turn:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, command_timeout=None)
            try:
                await self._conn.execute("SELECT 1")  # simple protocol: no prepared statement, fine through a pooler
            except BaseException:
                self._conn.terminate()
                self._conn = None
                raise

    async def aio_close(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None


@asynccontextmanager
async def open_database(
    database_url: str | None,
    *,
    data_dir: Path,
    pool_size: int,
    acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT_SECONDS,
    statement_timeout: float | None = None,
    direct_url: str | None = None,
    new_loop: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> AsyncIterator[Database]:
    """Yield a Database on a connected pool; close the pool (and stop an embedded server) on exit.

    `statement_timeout` (seconds) bounds every statement of the pool's connections, and every transaction left
    idle, on the server (an overrun is QueryCanceledError, a 503); None leaves them unbounded (a seed).
    `direct_url` (DATABASE_DIRECT_URL), when set and not `database_url`, says `database_url` is a transaction
    pooler: the pool prepares no statements to keep, and session work connects to `direct_url`.

    While the database refuses connections it retries with a capped backoff and a log line per attempt (in a
    container the database often starts after the service), for at most CONNECT_DEADLINE_SECONDS; then
    StoreUnavailable names the cause.
    """
    embedded = None
    if database_url is None:
        embedded = EmbeddedPostgres(data_dir)
        log.info("db.embedded.starting", pgdata=str(embedded.pgdata))
        database_url = await trio.to_thread.run_sync(embedded.start)
        log.info("db.embedded.started", pgdata=str(embedded.pgdata))
    try:
        async with open_bridge(*([new_loop] if new_loop else [])) as bridge:
            pooled = direct_url is not None and direct_url != database_url
            # A transaction pooler refuses startup parameters (PgBouncer 1.18: "unsupported startup parameter"):
            # behind one, the statement bound belongs on the role or in the pooler (docs/operations.md).
            settings = {} if pooled else _server_settings(statement_timeout)
            pool = await _connect(bridge, database_url, pool_size, settings, pooled=pooled)
            database = Database(
                bridge, pool, database_url, pool_size=pool_size, acquire_timeout=acquire_timeout, direct_dsn=direct_url
            )
            try:
                yield database
            finally:
                with trio.move_on_after(POOL_CLOSE_SECONDS, shield=True) as scope:
                    await database.close()
                if scope.cancelled_caught:
                    database.terminate()
                    log.warning("db.pool.close_timeout", seconds=POOL_CLOSE_SECONDS)
    finally:
        if embedded is not None:
            with trio.move_on_after(EMBEDDED_STOP_SECONDS, shield=True):
                await trio.to_thread.run_sync(embedded.stop)
            log.info("db.embedded.stopped")


async def _aio_close_pool(pool: asyncpg.Pool) -> None:
    await pool.close()


async def _aio_with_direct_pool(dsn: str, fn: Callable[..., Coroutine[Any, Any, R]], *args: object) -> R:
    async with asyncpg.create_pool(dsn, min_size=1, max_size=1, **_POOL_OPTIONS) as pool:
        return await fn(pool, *args)


async def _aio_create_pool(
    database_url: str, pool_size: int, server_settings: dict[str, str], pooled: bool
) -> asyncpg.Pool:
    cache = POOLED_STATEMENT_CACHE_SIZE if pooled else STATEMENT_CACHE_SIZE
    return await asyncpg.create_pool(
        database_url,
        min_size=1,
        max_size=pool_size,
        server_settings=server_settings,
        statement_cache_size=cache,
        **_POOL_OPTIONS,
    )


async def _connect(
    bridge: Bridge, database_url: str, pool_size: int, server_settings: dict[str, str], *, pooled: bool
) -> asyncpg.Pool:
    backoff = Backoff(initial=CONNECT_RETRY_FIRST_SECONDS, cap=CONNECT_RETRY_CAP_SECONDS, jitter=False)
    delay = backoff.next_delay()
    last_error: BaseException | None = None
    with trio.move_on_after(CONNECT_DEADLINE_SECONDS):
        while True:
            try:
                return await bridge.run(_aio_create_pool, database_url, pool_size, server_settings, pooled)
            except (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError) as exc:
                last_error = exc
                log.warning("db.connect_failed", error=repr(exc), retry_in=delay)
            except asyncpg.InvalidCatalogNameError as exc:
                raise StoreUnavailable(f"DATABASE_URL names a database that does not exist: {exc}") from exc
            except asyncpg.InvalidAuthorizationSpecificationError as exc:
                raise StoreUnavailable(f"DATABASE_URL credentials were refused: {exc}") from exc
            await trio.sleep(delay)
            delay = backoff.next_delay()
    raise StoreUnavailable(
        f"could not connect within {CONNECT_DEADLINE_SECONDS:g} s ({last_error!r}); check DATABASE_URL "
        "and that PostgreSQL is running"
    )
