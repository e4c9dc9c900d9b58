"""ExpiryTicker: the periodic soft delete of expired stories (housekeeping; reads filter expiry themselves)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, Protocol

import structlog
import trio

from stories.errors import StoreUnavailable

if TYPE_CHECKING:
    from datetime import datetime

    from stories.clock import Clock
    from stories.metrics import Metrics

__all__ = ["ExpiryTicker"]

log = structlog.get_logger()

DEFAULT_BATCH_SIZE = 500


class ExpiryStore(Protocol):
    async def expire_batch(self, now: datetime, limit: int) -> int | None: ...


@dataclass(slots=True)
class ExpiryTicker:
    """Soft-deletes expired stories in bounded batches, leader-only (a transaction-scoped advisory lock per
    batch, so many processes may run it and one does the work at a time). Inbox: none. Backpressure:
    self-paced, one run per interval. Restart: safe, batches are idempotent. A database outage skips runs
    (logged) instead of crashing."""

    store: ExpiryStore
    clock: Clock
    metrics: Metrics
    interval: float
    batch_size: int = DEFAULT_BATCH_SIZE

    async def run_once(self) -> int | None:
        """Expire everything due now, batch by batch. None when another process is the leader."""
        began = trio.current_time()
        total = 0
        while True:
            expired = await self.store.expire_batch(self.clock.now(), self.batch_size)
            if expired is None:
                log.debug("expiry.not_leader")
                return None
            total += expired
            if expired < self.batch_size:
                break
        elapsed = trio.current_time() - began
        self.metrics.stories_expired.inc(total)
        self.metrics.worker_latency.observe(elapsed)
        log.info("stories_expired", count=total, duration_ms=round(elapsed * 1000, 3))
        return total

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        while True:
            try:
                await self.run_once()
            except StoreUnavailable:
                log.warning("expiry.skipped", reason="database unavailable")
            await trio.sleep(self.interval)
