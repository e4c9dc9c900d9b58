"""MediaSweeper: deletes from the store the objects no reader can reach any more (API.md "Media uploads",
Lifecycle): the object of a deleted or expired story, and an issued key's object that no story took within 24 h.

Run by the expiry worker once per period, after it has soft-deleted the expired stories (a trigger makes each
leaving story's object due at once: schema/0008_media.sql). Bounded batches, claimed under the expiry lock, so one
process at a time deletes a given object. A row goes only once the store has confirmed the deletion: a store that
is down stops the run at the first failure, and the objects it claimed are tried again the next period.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

import structlog
import trio

from stories.errors import StorageUnavailable
from stories.media.storage import UPLOAD_URL_SECONDS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from stories.media.storage import ObjectStorage
    from stories.metrics import Metrics
    from stories.store.uploads import DueObject

__all__ = ["MediaSweeper", "SweepResult"]

log = structlog.get_logger()

DEFAULT_BATCH_SIZE = 100
# One DELETE on a healthy store takes milliseconds; past this the store counts as down for this run.
DELETE_SECONDS = 5.0


class DueUploads(Protocol):
    async def claim_due(self, now: datetime, limit: int, retry_at: datetime) -> list[DueObject] | None: ...
    async def forget_deleted(self, keys: Sequence[str], now: datetime, url_seconds: int) -> dict[str, int]: ...


@dataclass(frozen=True, slots=True)
class SweepResult:
    deleted: dict[str, int]
    failed: int


@dataclass(slots=True)
class MediaSweeper:
    uploads: DueUploads
    storage: ObjectStorage
    metrics: Metrics
    # A failed deletion is retried this long after (the expiry worker's period).
    retry_seconds: float
    batch_size: int = DEFAULT_BATCH_SIZE

    async def sweep(self, now: datetime) -> SweepResult | None:
        """Delete every object due at `now`, batch by batch; None when another process is the leader. Logs one
        `media_objects_deleted` line per run and counts `media_objects_deleted_total{reason}`."""
        began = trio.current_time()
        deleted: Counter[str] = Counter()
        failed = 0
        leader = False
        retry_at = now + timedelta(seconds=self.retry_seconds)
        while True:
            due = await self.uploads.claim_due(now, self.batch_size, retry_at)
            if due is None:
                break
            leader = True
            done, failed = await self._delete(due)
            if done:
                deleted.update(await self.uploads.forget_deleted(done, now, UPLOAD_URL_SECONDS))
            if failed or len(due) < self.batch_size:
                break
        if not leader:
            return None
        for reason, count in deleted.items():
            self.metrics.media_objects_deleted.labels(reason=reason).inc(count)
        log.info(
            "media_objects_deleted",
            count=sum(deleted.values()),
            reasons=dict(deleted),
            failed=failed,
            duration_ms=round((trio.current_time() - began) * 1000, 3),
        )
        return SweepResult(dict(deleted), failed)

    async def _delete(self, due: list[DueObject]) -> tuple[list[str], int]:
        """(keys deleted, how many could not be): stops at the first failure, the store being down then; the
        rest of the batch stays claimed until `retry_at`."""
        done: list[str] = []
        for item in due:
            with trio.move_on_after(DELETE_SECONDS) as waiting:
                try:
                    await self.storage.delete_object(item.key)
                except StorageUnavailable as exc:
                    log.warning("media.delete_failed", error=str(exc), pending=len(due) - len(done))
                    return done, len(due) - len(done)
            if waiting.cancelled_caught:
                log.warning("media.delete_failed", error="timed out", pending=len(due) - len(done))
                return done, len(due) - len(done)
            done.append(item.key)
        return done, 0
