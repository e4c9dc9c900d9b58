"""The feed cache (API.md "Freshness", docs/ARCHITECTURE.md "Caches"): fresh by construction, not by invalidation.

A page is cached per (viewer, cursor, limit) with the viewer's *graph version* at the time it was read, for
FEED_CACHE_SECONDS. The version changes whenever what the viewer may see changes by their own doing or by a
block: their own story (created or deleted), display name, follow, unfollow, mute, unmute or report of a
story, and a block or unblock either way (both users' versions change). So the next read after such a change
never matches an old page. Expiry applies at read time: a cached page is filtered by `expires_at > now`. A story
deleted by its author leaves a *deletion mark* for a while; a cached page holding a marked story is not served,
so the delete applies at once to every feed; so does moderation that hides a story from others (held for review,
removed, its author suspended), with the same mark. Other users' new stories, display names and the counters may
lag by up to FEED_CACHE_SECONDS, which API.md allows.

Versions and marks are shared through Redis when it is configured: a read costs one MGET (the viewer's version
and the marks of the cached page's stories), a change one INCR, a delete one SET; so the rules hold across
processes, and a hit costs that one Redis round trip and no PostgreSQL one. Without Redis they live in this
process, which is exact for a single process (WORKERS=1); several processes without Redis do not cache (the
runtime turns the cache off), since no shared channel would tell them of each other's changes. When Redis is
configured but down, feeds bypass the cache: always fresh, never stale.

Each cached story is kept with its JSON object, made once by `present` when the page is read from the store:
a hit serves the page without rendering it again.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol

import structlog
import trio
from coredis.tokens import PureToken

from stories.redis import RedisUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from uuid import UUID

    import coredis
    import orjson

    from stories.metrics import Metrics
    from stories.redis import RedisLink
    from stories.store.models import FeedCursor, Story

__all__ = ["FeedCache", "FeedEntry", "LocalVersions", "RedisVersions", "Snapshot"]

log = structlog.get_logger()

# Stories kept per process, in whole pages (the least recently read go first). A cached story and its JSON take
# ~1 KB (0.43 + 0.55 KB measured with 50-character texts), so about 40 MB; a bound in pages would not bound
# memory, since a page holds 2 to 101 stories.
DEFAULT_MAX_STORIES = 40_000
# Local versions older than the pages' lifetime are forgotten every this many changes.
PRUNE_EVERY = 1_000
# A version key outlives every page read under it by far; an idle user's key then simply disappears. So does a
# deletion mark: a page read before the delete (even one stored a request timeout after it) expires long before.
VERSION_KEY_SECONDS = 86_400


class FeedStore(Protocol):
    async def feed(self, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None) -> list[Story]: ...


class Snapshot(NamedTuple):
    """What a read needs to know: the viewer's graph version, and whether any of the stories asked about has
    been deleted by its author lately."""

    version: int
    deleted: bool


class GraphVersions(Protocol):
    async def current(self, user_id: UUID, story_ids: Sequence[UUID]) -> Snapshot | None:
        """The user's graph version and whether any of `story_ids` is marked deleted (one round trip), or None
        when it cannot be known now (the cache is bypassed then)."""
        ...

    async def changed(self, user_id: UUID) -> None:
        """What the user may see changed: pages of theirs read before now must not be served."""
        ...

    async def deleted(self, story_id: UUID) -> None:
        """The story was deleted: no page holding it, whoever read it, may be served from now on."""
        ...


@dataclass(slots=True)
class LocalVersions:
    """Versions and deletion marks in this process. An entry can be forgotten once every page read before it
    has expired."""

    ttl: float
    _versions: dict[UUID, tuple[int, float]] = field(default_factory=dict)
    _deleted: dict[UUID, float] = field(default_factory=dict)
    _next: int = 1

    async def current(self, user_id: UUID, story_ids: Sequence[UUID]) -> Snapshot | None:
        entry = self._versions.get(user_id)
        return Snapshot(0 if entry is None else entry[0], any(s in self._deleted for s in story_ids))

    async def changed(self, user_id: UUID) -> None:
        self._versions[user_id] = (self._next, trio.current_time())
        self._tick()

    async def deleted(self, story_id: UUID) -> None:
        self._deleted[story_id] = trio.current_time()
        self._tick()

    def _tick(self) -> None:
        self._next += 1
        if self._next % PRUNE_EVERY == 0:
            since = trio.current_time() - self.ttl
            self._versions = {u: v for u, v in self._versions.items() if v[1] > since}
            self._deleted = {s: at for s, at in self._deleted.items() if at > since}


def _fresh_version() -> int:
    """A version no key has held: random, so a key Redis lost (a restart without persistence, an eviction)
    cannot come back with a value that a page cached before the loss still carries (a counter would restart
    at 0 and count up through the old values)."""
    return secrets.randbits(63)


@dataclass(slots=True)
class RedisVersions:
    """Versions and deletion marks in Redis, shared by every process: `<prefix>feedver:<user>`,
    `<prefix>feeddel:<story>`. A version is a random number, replaced on every change: versions never repeat."""

    redis: RedisLink

    async def current(self, user_id: UUID, story_ids: Sequence[UUID]) -> Snapshot | None:
        version_key = self.redis.key("feedver", str(user_id))
        keys = [version_key, *(self.redis.key("feeddel", str(s)) for s in story_ids)]

        async def start_version(client: coredis.Redis[bytes]) -> bytes | None:
            # No version (a new user, an idle one whose key expired, or a key Redis lost): start a fresh one,
            # unless another process just did; never read a missing key as a value a cached page could hold.
            await client.set(
                version_key, str(_fresh_version()).encode(), condition=PureToken.NX, ex=VERSION_KEY_SECONDS
            )
            return await client.get(version_key)

        try:
            version, *marks = await self.redis.execute(lambda client: client.mget(keys))
            if version is None:
                version = await self.redis.execute(start_version)
        except RedisUnavailable:
            return None
        if version is None:
            return None
        # A deletion mark or a version bump made while Redis was down is lost, and Redis can come back with its
        # data (persistence, a healed partition): the key then holds the version a page cached before the outage
        # carries, and that page would show a deleted or blocked story again. So a page is kept under the key's
        # version and this process's count of Redis outages (the version is below 2**63): a page read before an
        # outage this process saw never matches after it.
        return Snapshot(self.redis.outages << 63 | int(version), any(mark is not None for mark in marks))

    async def deleted(self, story_id: UUID) -> None:
        key = self.redis.key("feeddel", str(story_id))
        try:
            await self.redis.execute(lambda client: client.set(key, b"1", ex=VERSION_KEY_SECONDS))
        except RedisUnavailable:
            # As for a lost version bump (below): other processes bypass their caches while Redis is down.
            log.warning("feed_cache.deletion_lost", story_id=str(story_id))

    async def changed(self, user_id: UUID) -> None:
        key = self.redis.key("feedver", str(user_id))

        async def bump(client: coredis.Redis[bytes]) -> None:
            await client.set(key, str(_fresh_version()).encode(), ex=VERSION_KEY_SECONDS)

        try:
            await self.redis.execute(bump)
        except RedisUnavailable:
            # Other processes cannot read versions either while Redis is down (they bypass their caches); a
            # lost bump with Redis up is bounded by FEED_CACHE_SECONDS, the pages' own lifetime.
            log.warning("feed_cache.version_lost", user_id=str(user_id))


class FeedEntry(NamedTuple):
    """A story of a feed page, and its JSON object as the cache's `present` made it."""

    story: Story
    json: orjson.Fragment


class _Page(NamedTuple):
    version: int
    stored_at: float
    entries: list[FeedEntry]


@dataclass(slots=True)
class FeedCache:
    """Feed pages, read through the cache. Safe to share between tasks."""

    store: FeedStore
    versions: GraphVersions
    metrics: Metrics
    ttl: float
    present: Callable[[Story], orjson.Fragment]
    max_stories: int = DEFAULT_MAX_STORIES
    _pages: OrderedDict[tuple[UUID, FeedCursor | None, int], _Page] = field(default_factory=OrderedDict)
    _stories: int = 0  # entries held by _pages

    async def entries(self, viewer_id: UUID, now: datetime, limit: int, cursor: FeedCursor | None) -> list[FeedEntry]:
        """Up to `limit` stories of the viewer's feed after `cursor`, as the store would return them, except that
        a cached page may hold stories that expired since it was read: callers filter `expires_at > now` (and
        keep the unfiltered rows for the next cursor, so a walk never skips a story)."""
        if self.ttl <= 0:
            return self._read(await self.store.feed(viewer_id, now, limit, cursor))
        key = (viewer_id, cursor, limit)
        page = self._pages.get(key)
        if page is not None and trio.current_time() - page.stored_at >= self.ttl:
            page = None
        snapshot = await self.versions.current(viewer_id, () if page is None else [e.story.id for e in page.entries])
        if snapshot is None:
            self.metrics.feed_cache_requests.labels(result="bypass").inc()
            return self._read(await self.store.feed(viewer_id, now, limit, cursor))
        if page is not None and page.version == snapshot.version and not snapshot.deleted:
            self._pages.move_to_end(key)
            self.metrics.feed_cache_requests.labels(result="hit").inc()
            return page.entries
        self.metrics.feed_cache_requests.labels(result="miss").inc()
        entries = self._read(await self.store.feed(viewer_id, now, limit, cursor))
        self._keep(key, _Page(snapshot.version, trio.current_time(), entries))
        return entries

    def _keep(self, key: tuple[UUID, FeedCursor | None, int], page: _Page) -> None:
        replaced = self._pages.pop(key, None)
        if replaced is not None:
            self._stories -= len(replaced.entries)
        self._pages[key] = page
        self._stories += len(page.entries)
        while self._stories > self.max_stories and len(self._pages) > 1:
            _, evicted = self._pages.popitem(last=False)
            self._stories -= len(evicted.entries)

    def _read(self, rows: list[Story]) -> list[FeedEntry]:
        return [FeedEntry(story, self.present(story)) for story in rows]

    async def changed(self, *user_ids: UUID) -> None:
        """Call after a change of what these users may see has committed: their own story or display name, a
        follow, unfollow, mute, unmute or story report of theirs, a block or unblock between them."""
        if self.ttl > 0:
            for user_id in user_ids:
                await self.versions.changed(user_id)

    async def stories_hidden(self, story_ids: Sequence[UUID]) -> None:
        """Call after a moderation change that took these stories out of other users' reads has committed (held
        for review, removed, their author suspended): it applies at once to every feed, as a delete does. Their
        marks outlive a dismissal or an unsuspension by VERSION_KEY_SECONDS: pages holding the stories are then
        read afresh each time (misses, never stale), a price paid only for moderated stories."""
        if self.ttl > 0:
            for story_id in story_ids:
                await self.versions.deleted(story_id)

    async def story_deleted(self, author_id: UUID, story_id: UUID) -> None:
        """Call after the author's delete has committed: it applies at once to every feed, the author's too."""
        if self.ttl > 0:
            await self.versions.deleted(story_id)
            await self.versions.changed(author_id)
