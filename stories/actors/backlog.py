"""ReportBacklog: the open-reports gauges, read from the database (the one place every process agrees on)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn, Protocol

import structlog
import trio

from stories.errors import StoreUnavailable

if TYPE_CHECKING:
    from stories.clock import Clock
    from stories.metrics import Metrics
    from stories.store.models import Backlog

__all__ = ["ReportBacklog"]

log = structlog.get_logger()

# A moderation queue is watched in minutes and hours: a 15-second-old reading is plenty, and costs one count over
# report_cases_open_idx (the open cases only) per process per interval.
DEFAULT_BACKLOG_INTERVAL = 15.0


class BacklogStore(Protocol):
    async def report_backlog(self) -> Backlog: ...


@dataclass(slots=True)
class ReportBacklog:
    """Sets `moderation_open_reports` and `moderation_oldest_open_report_age_seconds` from the database, so they
    are right whichever process filed or resolved the reports: every process exports the same values (aggregate
    them with max()). Owns nothing but its loop. Inbox: none. Backpressure: self-paced. Restart: safe, a reading
    is idempotent. A database outage keeps the last reading (logged)."""

    store: BacklogStore
    clock: Clock
    metrics: Metrics
    interval: float = DEFAULT_BACKLOG_INTERVAL

    async def sample(self) -> None:
        backlog = await self.store.report_backlog()
        self.metrics.open_reports.set(backlog.open)
        age = 0.0 if backlog.oldest is None else (self.clock.now() - backlog.oldest).total_seconds()
        self.metrics.oldest_open_report_age.set(max(age, 0.0))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        while True:
            try:
                await self.sample()
            except StoreUnavailable:
                log.warning("report_backlog.skipped", reason="database unavailable")
            await trio.sleep(self.interval)
