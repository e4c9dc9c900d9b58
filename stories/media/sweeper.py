"""MediaSweeper: deletes from the store the objects no reader can reach any more (API.md "Media uploads",
Lifecycle): the object of a deleted or expired story (its upload and the story's own copy of it), and an issued
key's object that no story took within 24 h. It also makes the story copies the store could not make when their
stories were created (stories/media/link.py `publish`), once the upload URLs have expired.

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

from stories.domain import story_object_key
from stories.errors import StorageUnavailable
from stories.media.storage import UPLOAD_URL_SECONDS

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from stories.media.storage import ObjectStorage
    from stories.metrics import Metrics
    from stories.store.uploads import DueObject, Uncopied

__all__ = ["MediaSweeper", "SweepResult"]

log = structlog.get_logger()

DEFAULT_BATCH_SIZE = 100
# One DELETE on a healthy store takes milliseconds; past this the store counts as down for this run.
DELETE_SECONDS = 5.0


class DueUploads(Protocol):
    async def claim_due(self, now: datetime, limit: int, retry_at: datetime) -> list[DueObject] | None: ...
    async def forget_deleted(self, keys: Sequence[str], now: datetime, url_seconds: int) -> dict[str, int]: ...
    async def claim_uncopied(self, now: datetime, limit: int, url_seconds: int) -> list[Uncopied]: ...
    async def forget_copied(self, keys: Sequence[str]) -> None: ...


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
        `media_objects_deleted` line per run and counts `media_objects_deleted_total{reason}`. First makes the
        story copies still missing (one batch per run)."""
        began = trio.current_time()
        await self._copy(now)
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
                    if item.story_id is not None:
                        await self.storage.delete_object(story_object_key(item.story_id, item.key))
                except StorageUnavailable as exc:
                    log.warning("media.delete_failed", error=str(exc), pending=len(due) - len(done))
                    return done, len(due) - len(done)
            if waiting.cancelled_caught:
                log.warning("media.delete_failed", error="timed out", pending=len(due) - len(done))
                return done, len(due) - len(done)
            done.append(item.key)
        return done, 0

    async def _copy(self, now: datetime) -> None:
        """Copy each live story's upload that has no story copy yet to the story's key; a copy already there (one
        that a creation's timed-out request made after all) is kept: readers may have it. Stops at the first
        failure, the store being down then; the rest is tried the next period."""
        copied: list[str] = []
        for item in await self.uploads.claim_uncopied(now, self.batch_size, UPLOAD_URL_SECONDS):
            target = story_object_key(item.story_id, item.key)
            with trio.move_on_after(DELETE_SECONDS) as waiting:
                try:
                    if not await self.storage.object_exists(target):
                        await self.storage.copy_object(item.key, target)
                except StorageUnavailable as exc:
                    log.warning("media.copy_failed", error=str(exc))
                    break
            if waiting.cancelled_caught:
                log.warning("media.copy_failed", error="timed out")
                break
            copied.append(item.key)
        if copied:
            await self.uploads.forget_copied(copied)
            log.info("media_objects_copied", count=len(copied))
