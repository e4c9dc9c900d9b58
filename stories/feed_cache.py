"""The feed cache (API.md "Freshness", DESIGN.md "Caching and Redis"): fresh by construction, not by invalidation.

A page is cached per (viewer, cursor, limit) with the viewer's *graph version* at the time it was read, for
FEED_CACHE_SECONDS. The version changes whenever what the viewer may see changes by the viewer's own doing
(their own story, a follow or an unfollow), so the next read after such a change never matches an old page.
Expiry applies at read time: a cached page is filtered by `expires_at > now`. Other users' new stories and the
counters may lag by up to FEED_CACHE_SECONDS, which API.md allows.

Versions are shared through Redis when it is configured (one GET per read, one INCR per change), so the rules
hold across processes; a hit costs that one Redis round trip and no PostgreSQL one. Without Redis the versions
live in this process, which is exact for a single process (WORKERS=1); several processes without Redis do not
cache (the runtime turns the cache off), since no shared channel would tell them of each other's changes. When
Redis is configured but down, feeds bypass the cache: always fresh, never stale.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import structlog
import trio

from stories.redis import RedisUnavailable

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    import coredis

    from stories.metrics import Metrics
    from stories.redis import RedisLink
    from stories.store.models import FeedCursor, Story

__all__ = ["FeedCache", "LocalVersions", "RedisVersions"]

log = structlog.get_logger()

# Pages kept per process: ~21 stories of < 1 KB each, so about 20-40 MB at most.
DEFAULT_MAX_PAGES = 2_000
# Local versions older than the pages' lifetime are forgotten every this many changes.
PRUNE_EVERY = 1_000
# A version key outlives every page read under it by far; an idle user's key then simply disappears.
VERSION_KEY_SECONDS = 86_400


class FeedStore(Protocol):
    async def feed(self, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None) -> list[Story]: ...


class GraphVersions(Protocol):
    async def current(self, user_id: UUID) -> int | None:
        """The user's graph version, or None when it cannot be known now (the cache is bypassed then)."""
        ...

    async def changed(self, user_id: UUID) -> None:
        """What the user may see changed by their own doing: pages read before now must not be served."""
        ...


@dataclass(slots=True)
class LocalVersions:
    """Versions in this process. An entry can be forgotten once every page read before it has expired."""

    ttl: float
    _versions: dict[UUID, tuple[int, float]] = field(default_factory=dict)
    _next: int = 1

    async def current(self, user_id: UUID) -> int | None:
        entry = self._versions.get(user_id)
        return 0 if entry is None else entry[0]

    async def changed(self, user_id: UUID) -> None:
        now = trio.current_time()
        self._versions[user_id] = (self._next, now)
        self._next += 1
        if self._next % PRUNE_EVERY == 0:
            self._versions = {u: v for u, v in self._versions.items() if v[1] > now - self.ttl}


@dataclass(slots=True)
class RedisVersions:
    """Versions in Redis, shared by every process: `<prefix>feedver:<user>`."""

    redis: RedisLink

    async def current(self, user_id: UUID) -> int | None:
        key = self.redis.key("feedver", str(user_id))
        try:
            raw = await self.redis.execute(lambda client: client.get(key))
        except RedisUnavailable:
            return None
        return 0 if raw is None else int(raw)

    async def changed(self, user_id: UUID) -> None:
        key = self.redis.key("feedver", str(user_id))

        async def bump(client: coredis.Redis[bytes]) -> None:
            await client.incr(key)
            await client.expire(key, VERSION_KEY_SECONDS)

        try:
            await self.redis.execute(bump)
        except RedisUnavailable:
            # Other processes cannot read versions either while Redis is down (they bypass their caches); a
            # lost bump with Redis up is bounded by FEED_CACHE_SECONDS, the pages' own lifetime.
            log.warning("feed_cache.version_lost", user_id=str(user_id))


class _Page(NamedTuple):
    version: int
    stored_at: float
    rows: list[Story]


@dataclass(slots=True)
class FeedCache:
    """Feed pages, read through the cache. Safe to share between tasks."""

    store: FeedStore
    versions: GraphVersions
    metrics: Metrics
    ttl: float
    max_pages: int = DEFAULT_MAX_PAGES
    _pages: OrderedDict[tuple[UUID, FeedCursor | None, int], _Page] = field(default_factory=OrderedDict)

    async def rows(self, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None) -> list[Story]:
        """Up to `limit` stories of the viewer's feed after `cursor`, as the store would return them, except that
        a cached page may hold stories that expired since it was read: callers filter `expires_at > now` (and
        keep the unfiltered rows for the next cursor, so a walk never skips a story)."""
        if self.ttl <= 0:
            return await self.store.feed(viewer_id, now, limit, cursor)
        version = await self.versions.current(viewer_id)
        if version is None:
            self.metrics.feed_cache_requests.labels(result="bypass").inc()
            return await self.store.feed(viewer_id, now, limit, cursor)
        key = (viewer_id, cursor, limit)
        page = self._pages.get(key)
        if page is not None and page.version == version and trio.current_time() - page.stored_at < self.ttl:
            self._pages.move_to_end(key)
            self.metrics.feed_cache_requests.labels(result="hit").inc()
            return page.rows
        self.metrics.feed_cache_requests.labels(result="miss").inc()
        rows = await self.store.feed(viewer_id, now, limit, cursor)
        self._pages[key] = _Page(version, trio.current_time(), rows)
        self._pages.move_to_end(key)
        if len(self._pages) > self.max_pages:
            self._pages.popitem(last=False)
        return rows

    async def changed(self, user_id: UUID) -> None:
        """Call after a change of the user's own (a story, a follow, an unfollow) has committed."""
        if self.ttl > 0:
            await self.versions.changed(user_id)
