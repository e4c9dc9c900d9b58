"""The crossing from trio into asyncio, where asyncpg runs: `open_bridge()` yields a `Bridge`.

asyncpg is asyncio-only. The bridge is a dedicated thread running a real asyncio event loop (uvloop) that owns
every asyncpg object; trio hands it one coroutine function per operation and is woken when it ends (STYLE R14:
one crossing per store operation, never per statement). bench/bridge.md has the numbers that chose it over
trio-asyncio (hosting the loop inside trio): about 4x less CPU per operation (205 against 788 µs for a
`SELECT 1`), and 12x the throughput while the trio thread is saturated, provided the interpreter hands the GIL
over every 0.5 ms instead of every 5 ms (SWITCH_INTERVAL_SECONDS, below).

Threading rules: asyncpg objects are touched only on the loop's thread (`run`, `call_soon`); callbacks that
asyncpg calls on that thread reach trio through `to_trio`.

Errors: `cross` is the one translation of what fails on the other side (asyncpg's errors, the socket's, an
asyncio cancel) into the domain's errors (STYLE R15); the pool, the event tail and the relay all cross through it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import structlog
import trio
import uvloop

from stories.errors import StoriesError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

__all__ = [
    "CONNECTION_FAILURES",
    "POOL_FAILURES",
    "Bridge",
    "close_own_connection",
    "cross",
    "open_bridge",
    "own_connection_crossing",
]

log = structlog.get_logger()

R = TypeVar("R")

# How often a thread waiting for the GIL gets it from a busy one. CPython's 5 ms default makes every database
# reply wait up to 5 ms behind the HTTP work of the trio thread; 0.5 ms measured best (bench/bridge.md, "+burn").
SWITCH_INTERVAL_SECONDS = 0.0005
LOOP_STOP_SECONDS = 5.0
# How long closing a connection of its own may take before it is terminated instead.
CONNECTION_CLOSE_SECONDS = 2.0

# What "the database is not there" looks like from a pool connection: refused/reset sockets, a server shutting
# down or not yet accepting, a connection dropped mid-query, too many clients, a statement cancelled by the
# server. Any other server error (a constraint, a syntax error) is the operation's own and passes through.
POOL_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,
)
# On a connection of its own (the event tail, the relay's LISTEN), which runs only statements known to be right,
# any server or socket error means the connection is done.
CONNECTION_FAILURES: tuple[type[BaseException], ...] = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class _Call:
    """One operation's asyncio task, created on the loop's thread, read by the trio thread once it has ended."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None


class Bridge:
    """Runs asyncio coroutine functions from trio tasks. Safe to share between tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken) -> None:
        self.loop = loop
        self._token = token

    async def run(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        *args: object,
        finished: Callable[[], None] | None = None,
    ) -> R:
        """`await fn(*args)` on the loop's thread; its result or exception.

        Cancellable at once: a trio cancel cancels the asyncio task and returns without waiting for it (asyncpg
        ends a cancelled query only once the server confirms, which a hung server never does, so waiting would
        let no deadline bound a call). `finished` is called in the trio thread exactly once, when the asyncio
        work has really ended, whether the caller waited or gave up: a resource the task holds (a pool slot) is
        released then, not earlier.
        """
        call = _Call()
        done = trio.Event()

        def finish() -> None:  # trio thread
            done.set()
            if finished is not None:
                finished()

        notify = self.to_trio(finish)

        def start() -> None:  # loop thread
            call.task = self.loop.create_task(fn(*args))
            call.task.add_done_callback(lambda _: notify())

        def abandon() -> None:  # loop thread; always after `start` (the loop runs callbacks in order)
            if call.task is not None:
                call.task.cancel()
                call.task.add_done_callback(_retrieve_outcome)

        self.loop.call_soon_threadsafe(start)
        try:
            await done.wait()
        finally:
            if not done.is_set():
                self.loop.call_soon_threadsafe(abandon)
        assert call.task is not None  # `finish` runs only after `start` created the task
        result: R = call.task.result()
        return result

    def call_soon(self, callback: Callable[..., object], *args: object) -> None:
        """Run a synchronous `callback(*args)` on the loop's thread soon (e.g. terminating a connection)."""
        self.loop.call_soon_threadsafe(callback, *args)

    def to_trio(self, callback: Callable[..., object]) -> Callable[..., None]:
        """`callback`, made safe to call from the loop's thread: it runs in the trio thread, soon, in order."""

        def deliver(*args: object) -> None:
            with suppress(trio.RunFinishedError):  # trio has exited: nobody is left to tell
                self._token.run_sync_soon(callback, *args)

        return deliver


@asynccontextmanager
async def open_bridge(
    new_loop: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop,
) -> AsyncIterator[Bridge]:
    """The loop's thread lives as long as this block; close every asyncpg object inside it. `new_loop` is a seam
    for tests (asyncio's own loop lets them look at its timers)."""
    loop = new_loop()
    loop.set_exception_handler(_log_asyncio_error)
    thread = threading.Thread(target=loop.run_forever, name="stories-asyncpg", daemon=True)
    # Process-wide, and meant: the trio thread is the only other thread that runs Python for long.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    thread.start()
    try:
        yield Bridge(loop, trio.lowlevel.current_trio_token())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        with trio.move_on_after(LOOP_STOP_SECONDS, shield=True):
            await trio.to_thread.run_sync(thread.join, abandon_on_cancel=True)
        if not thread.is_alive():
            loop.close()


def _log_asyncio_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio would print to stderr as a bare traceback (asyncpg does, for a connection that breaks while
    the pool releases it during a database outage) becomes one structured log line."""
    error = context.get("exception")
    log.warning("asyncio.error", message=context.get("message"), error=repr(error) if error else None)


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    """Mark an abandoned task's outcome as seen, so asyncio does not warn that nobody retrieved it."""
    if not task.cancelled():
        task.exception()


async def cross(
    bridge: Bridge,
    fn: Callable[..., Coroutine[Any, Any, R]],
    *args: object,
    failures: tuple[type[BaseException], ...],
    error: Callable[[str], Exception],
    lost: str,
    finished: Callable[[], None] | None = None,
) -> R:
    """`bridge.run(fn, *args)`, with `failures` raised as `error(lost)` (the cause chained, and logged).

    An asyncio CancelledError with no trio cancel behind it means the loop tore the operation down (a pool
    closed under it): as a BaseException it would end the process, so it becomes `error` too.
    """
    try:
        return await bridge.run(fn, *args, finished=finished)
    except failures as exc:
        log.warning("bridge.failed", operation=fn.__name__, error=repr(exc))
        raise error(lost) from exc
    except asyncio.CancelledError as exc:
        log.warning("bridge.interrupted", operation=fn.__name__)
        raise error(f"{lost} (interrupted)") from exc


def own_connection_crossing(error: Callable[[str], Exception], lost: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """`cross` for the operations of a connection of its own: any CONNECTION_FAILURES raised as `error(lost)`."""

    async def crossing(bridge: Bridge, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> Any:
        return await cross(bridge, fn, *args, failures=CONNECTION_FAILURES, error=error, lost=lost)

    return crossing


async def close_own_connection(
    bridge: Bridge, conn: asyncpg.Connection[Any], crossing: Callable[..., Coroutine[Any, Any, Any]]
) -> None:
    """Close a connection of its own through `crossing` (an `own_connection_crossing`), shielded from the caller's
    cancel and within CONNECTION_CLOSE_SECONDS; terminated when the close fails or takes longer. Never raises."""
    with trio.move_on_after(CONNECTION_CLOSE_SECONDS, shield=True):
        try:
            await crossing(bridge, _aio_close, conn)
        except StoriesError:  # the crossing's own error: the close failed
            bridge.call_soon(conn.terminate)
    if not conn.is_closed():
        bridge.call_soon(conn.terminate)


async def _aio_close(conn: asyncpg.Connection[Any]) -> None:
    await conn.close()
