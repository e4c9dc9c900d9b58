"""The crossing from trio into asyncio, where asyncpg runs: `open_bridge()` yields a `Bridge`.

asyncpg is asyncio-only. The bridge hosts an asyncio event loop inside this trio process (trio-asyncio) and runs
one coroutine function per call on it (STYLE R14: one crossing per store operation, never per statement).
bench/bridge.md holds the numbers that chose this bridge.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import trio
import trio_asyncio

if TYPE_CHECKING:
    import asyncio
    from collections.abc import AsyncIterator, Callable, Coroutine

__all__ = ["Bridge", "open_bridge"]

log = structlog.get_logger()

R = TypeVar("R")


class Bridge:
    """Runs asyncio coroutine functions from trio tasks. Safe to share between tasks."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    async def run(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        *args: object,
        finished: Callable[[], None] | None = None,
    ) -> R:
        """`await fn(*args)` on the asyncio loop; its result or exception.

        Cancellable at once: a trio cancel cancels the asyncio task and returns without waiting for it
        (asyncpg ends a cancelled query only once the server confirms, which a hung server never does, so
        waiting would let no deadline bound a call). `finished` is called in the trio thread exactly once,
        when the asyncio task has really ended, whether the caller waited or gave up: a resource the task holds
        (a pool slot) is released then, not earlier.
        """
        try:
            task = self.loop.create_task(fn(*args))
        except BaseException:
            if finished is not None:
                finished()
            raise
        done = trio.Event()

        def on_done(_: asyncio.Task[R]) -> None:
            done.set()
            if finished is not None:
                finished()

        task.add_done_callback(on_done)
        try:
            await done.wait()
        finally:
            if not task.done():
                task.cancel()
                task.add_done_callback(_retrieve_outcome)
        return task.result()


@asynccontextmanager
async def open_bridge() -> AsyncIterator[Bridge]:
    """The asyncio loop lives as long as this block; close every asyncpg object inside it."""
    async with trio_asyncio.open_loop() as loop:
        loop.set_exception_handler(_log_asyncio_error)
        yield Bridge(loop)


def _log_asyncio_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """What asyncio would print to stderr as a bare traceback (asyncpg does, for a connection that breaks while
    the pool releases it during a database outage) becomes one structured log line."""
    error = context.get("exception")
    log.warning("asyncio.error", message=context.get("message"), error=repr(error) if error else None)


def _retrieve_outcome(task: asyncio.Task[Any]) -> None:
    """Mark an abandoned task's outcome as seen, so asyncio does not warn that nobody retrieved it."""
    if not task.cancelled():
        task.exception()
