"""CounterFlusher: stories' view and reaction counters, kept in step with their rows off the request path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, Protocol

import structlog
import trio

from stories.errors import Unavailable

if TYPE_CHECKING:
    from collections.abc import Sequence
    from uuid import UUID

__all__ = ["CounterFlusher"]

log = structlog.get_logger()

DEFAULT_FLUSH_INTERVAL = 1.0
# Touched stories kept between flushes; past this a flush starts at once (and touches wait for none).
DEFAULT_MAX_PENDING = 10_000
RECOUNT_CHUNK = 1_000
SHUTDOWN_FLUSH_SECONDS = 2.0


class CounterStore(Protocol):
    async def recount(self, story_ids: Sequence[UUID]) -> None: ...


@dataclass(slots=True)
class CounterFlusher:
    """Recounts the stories that got views or reactions, once per tick, in one statement per chunk.

    A view or a reaction is then a single insert, and a viral story's row is updated once a tick instead of
    being a lock that every viewer queues on; counters lag by about `interval` (API.md allows it). The recount
    sets each counter from its rows, so it is idempotent: nothing is ever counted twice, and stories a crashed
    process never flushed are recounted by the expiry worker. Inbox: `touch()`, synchronous and never blocking.
    Backpressure: a set bounded by `max_pending`, which wakes an early flush. Restart: safe, the set survives.
    On cancel (shutdown) it flushes what is pending, bounded by SHUTDOWN_FLUSH_SECONDS.
    """

    store: CounterStore
    interval: float = DEFAULT_FLUSH_INTERVAL
    max_pending: int = DEFAULT_MAX_PENDING
    _pending: set[UUID] = field(default_factory=set)
    _full: trio.Event = field(default_factory=trio.Event)

    def touch(self, story_id: UUID) -> None:
        """This story's counters changed: recount it at the next flush."""
        self._pending.add(story_id)
        if len(self._pending) >= self.max_pending:
            self._full.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Recount every touched story now. A database outage keeps them pending for the next flush; so does
        any other error, or a cancel, which then propagates: what was not recounted is never dropped."""
        touched, self._pending = list(self._pending), set()
        self._full = trio.Event()
        for start in range(0, len(touched), RECOUNT_CHUNK):
            chunk = touched[start : start + RECOUNT_CHUNK]
            try:
                await self.store.recount(chunk)
            except Unavailable:
                self._pending.update(touched[start:])
                log.warning("counters.flush_failed", pending=len(self._pending))
                return
            except BaseException:
                # Re-raised: a cancel or a crash still ends this flush, but the stories it had taken out
                # (this chunk may or may not have committed: a recount is idempotent) are pending again.
                self._pending.update(touched[start:])
                raise

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        try:
            while True:
                with trio.move_on_after(self.interval):
                    await self._full.wait()
                await self.flush()
        finally:
            with trio.move_on_after(SHUTDOWN_FLUSH_SECONDS, shield=True):
                await self.flush()
