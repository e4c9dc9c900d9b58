"""ExpiryTicker: the periodic soft delete of expired stories (housekeeping; reads filter expiry themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn, Protocol

import structlog
import trio

from stories.domain import DEFAULT_RETENTION, IDEMPOTENCY_KEY_LIFETIME
from stories.errors import Unavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from stories.clock import Clock
    from stories.media.sweeper import MediaSweeper
    from stories.metrics import Metrics

__all__ = ["ExpiryTicker"]

log = structlog.get_logger()

DEFAULT_BATCH_SIZE = 500


# The counters' recount looks back this far on a process's first run, and overlaps runs by this margin (clocks
# of the processes that stamped the views may differ a little).
RECOUNT_FIRST_LOOKBACK = timedelta(minutes=10)
RECOUNT_OVERLAP = timedelta(minutes=1)


class ExpiryStore(Protocol):
    async def expire_batch(self, now: datetime, limit: int) -> int | None: ...
    async def recount_since(
        self, since: datetime, now: datetime | None = None, overlap_seconds: float = 0.0
    ) -> int | None: ...
    async def purge_stories(self, before: datetime, limit: int) -> int | None: ...
    async def purge_idempotency_keys(self, before: datetime, limit: int) -> int | None: ...


@dataclass(slots=True)
class ExpiryTicker:
    """Soft-deletes expired stories in bounded batches, then keeps the house: recounts counters a crashed process
    never flushed, and deletes for good what retention no longer keeps (stories soft-deleted more than
    `retention` ago, with their audience, views and reactions; idempotency keys after 24 h), and has the media
    sweeper delete the objects no reader can reach any more (stories/media/sweeper.py). Leader-only: every
    batch takes a transaction-scoped advisory lock, so many processes may run it and one does the work at a
    time. Inbox: none. Backpressure: self-paced, one run per interval. Restart: safe, batches are idempotent.
    A database outage or a saturated pool skips runs (logged) instead of crashing."""

    store: ExpiryStore
    clock: Clock
    metrics: Metrics
    interval: float
    batch_size: int = DEFAULT_BATCH_SIZE
    retention: timedelta = DEFAULT_RETENTION
    # Deletes the objects of expired, deleted and never-used uploads; None when object storage is off here.
    media: MediaSweeper | None = None
    _recounted_until: datetime | None = None

    async def run_once(self) -> int | None:
        """Expire everything due now, batch by batch, then keep the house. None when another process is the
        leader. A run that loses the leadership half-way still counts and logs what it did."""
        began = trio.current_time()
        now = self.clock.now()
        total = await self._drain(self.store.expire_batch, now)
        if total is None:
            log.debug("expiry.not_leader")
            return None
        elapsed = trio.current_time() - began
        self.metrics.stories_expired.inc(total)
        self.metrics.worker_latency.observe(elapsed)
        log.info("stories_expired", count=total, duration_ms=round(elapsed * 1000, 3))
        if self.media is not None:
            await self.media.sweep(now)
        await self._keep_house(now)
        return total

    async def _keep_house(self, now: datetime) -> None:
        began = trio.current_time()
        since = self._recounted_until or now - RECOUNT_FIRST_LOOKBACK
        # The store also reaches back to where the last recount of any process got (a start after a long outage).
        recounted = await self.store.recount_since(since - RECOUNT_OVERLAP, now, RECOUNT_OVERLAP.total_seconds())
        if recounted is not None:
            self._recounted_until = now
        stories = await self._drain(self.store.purge_stories, now - self.retention)
        keys = await self._drain(self.store.purge_idempotency_keys, now - IDEMPOTENCY_KEY_LIFETIME)
        self.metrics.retention_deleted.labels(kind="stories").inc(stories or 0)
        self.metrics.retention_deleted.labels(kind="idempotency_keys").inc(keys or 0)
        log.info(
            "housekeeping",
            recounted=recounted,
            stories_deleted=stories,
            idempotency_keys_deleted=keys,
            duration_ms=round((trio.current_time() - began) * 1000, 3),
        )

    async def _drain(self, batch: Callable[[datetime, int], Awaitable[int | None]], before: datetime) -> int | None:
        """Run `batch` until one comes back short. None when not the leader from the start."""
        total: int | None = None
        while True:
            done = await batch(before, self.batch_size)
            if done is None:
                return total
            total = (total or 0) + done
            if done < self.batch_size:
                return total

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        while True:
            try:
                await self.run_once()
            except Unavailable as exc:
                # The database down or its pool saturated (Overloaded): skip this run, the next one catches up.
                log.warning("expiry.skipped", reason=exc.code)
            await trio.sleep(self.interval)
