"""The tray cache: a viewer's tray stories per graph version, with their own views laid over them.

A read from the store (one round trip) holds every story of the viewer's tray and the viewer's views of them;
it is kept for FEED_CACHE_SECONDS under the viewer's graph version, the feed cache's (stories/feed_cache.py), and
is served while that version stands and no story on the page is marked deleted: the feed's rules, so the tray
lags exactly as the feed may. The viewer's own views must apply at once, on every process, without throwing the
read away: the view route records each in a short *seen log* (`SeenLog.viewed`), and every page lays the log
over the stories it serves (`recent`). The log only has to outlive the reads it corrects (FEED_CACHE_SECONDS),
so it stays small. In Redis when configured (`<prefix>trayseen:<viewer>`, a sorted set by view time), else in
this process (exact when it is the only one; the runtime turns both caches off for several without Redis).

A hit costs two Redis round trips (the seen log, then the version and the page's deletion marks) and no
PostgreSQL one; a miss adds the store's one. When Redis is down the tray bypasses the cache, always fresh.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple, Protocol
from uuid import UUID

import structlog
import trio
from coredis.response.types import ScoredMember

from stories.feed_cache import PRUNE_EVERY
from stories.redis import RedisUnavailable
from stories.tray import TrayItem, arrange, gather, page_after

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import coredis

    from stories.feed_cache import GraphVersions
    from stories.metrics import Metrics
    from stories.redis import RedisLink
    from stories.store.models import Story, TrayStory
    from stories.tray import Key, Placed, TrayAuthor

__all__ = ["LocalSeenLog", "RedisSeenLog", "SeenLog", "ServedAuthor", "ServedStory", "TrayCache", "TrayPage"]

log = structlog.get_logger()

# Tray stories kept per process, in whole trays (the least recently read go first), as for the feed's pages.
DEFAULT_MAX_STORIES = 40_000
# A seen-log entry outlives the reads it corrects by this much more, for clocks of different hosts that disagree.
CLOCK_SLACK = timedelta(seconds=60)


class TrayStore(Protocol):
    async def tray(self, viewer_id: UUID, now: datetime) -> list[TrayStory]: ...


class SeenLog(Protocol):
    async def recent(self, viewer_id: UUID) -> dict[UUID, datetime] | None:
        """The viewer's views of the last FEED_CACHE_SECONDS or more (story id -> viewed at), or None when they
        cannot be known now (the cache is bypassed then)."""
        ...

    async def viewed(self, viewer_id: UUID, story_id: UUID, viewed_at: datetime) -> None:
        """The viewer's view of the story has committed."""
        ...


@dataclass(slots=True)
class LocalSeenLog:
    """The seen log in this process: per viewer, their views of the last `keep` seconds (this process's clock)."""

    keep: float
    _views: dict[UUID, dict[UUID, tuple[datetime, float]]] = field(default_factory=dict)
    _added: int = 0

    async def recent(self, viewer_id: UUID) -> dict[UUID, datetime] | None:
        since = trio.current_time() - self.keep
        return {story: at for story, (at, added) in self._views.get(viewer_id, {}).items() if added > since}

    async def viewed(self, viewer_id: UUID, story_id: UUID, viewed_at: datetime) -> None:
        self._views.setdefault(viewer_id, {})[story_id] = (viewed_at, trio.current_time())
        self._added += 1
        if self._added % PRUNE_EVERY == 0:
            # Viewers who never read their tray again leave nothing behind for long.
            since = trio.current_time() - self.keep
            fresh = {
                viewer: {story: entry for story, entry in views.items() if entry[1] > since}
                for viewer, views in self._views.items()
            }
            self._views = {viewer: views for viewer, views in fresh.items() if views}


@dataclass(slots=True)
class RedisSeenLog:
    """The seen log in Redis, shared by every process: a sorted set per viewer, scored by view time (ms)."""

    redis: RedisLink
    keep: timedelta

    async def recent(self, viewer_id: UUID) -> dict[UUID, datetime] | None:
        key = self.redis.key("trayseen", str(viewer_id))
        try:
            members = await self.redis.execute(lambda client: client.zrange(key, 0, -1, withscores=True))
        except RedisUnavailable:
            return None
        return {
            UUID(_decoded(entry.member)): datetime.fromtimestamp(entry.score / 1000, UTC)
            for entry in members
            if isinstance(entry, ScoredMember)
        }

    async def viewed(self, viewer_id: UUID, story_id: UUID, viewed_at: datetime) -> None:
        key = self.redis.key("trayseen", str(viewer_id))
        at = viewed_at.timestamp() * 1000
        keep = self.keep // timedelta(milliseconds=1)

        async def add(client: coredis.Redis[bytes]) -> None:
            # One round trip: record the view, forget the views no read needs any more, keep the set alive.
            async with client.pipeline(transaction=False) as pipe:
                pipe.zadd(key, {str(story_id): at})
                pipe.zremrangebyscore(key, float("-inf"), at - keep)
                pipe.pexpire(key, keep)

        try:
            await self.redis.execute(add)
        except RedisUnavailable:
            # Reads bypass the cache while Redis is down; a view lost with Redis up lags by FEED_CACHE_SECONDS.
            log.warning("tray_cache.view_lost", viewer_id=str(viewer_id), story_id=str(story_id))


def _decoded(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode()


@dataclass(slots=True)
class _Tray:
    """A read of the store, and what tells whether an order computed from it still holds."""

    version: int
    stored_at: float
    authors: list[TrayAuthor]
    story_authors: dict[UUID, UUID]  # story id -> author id, to know which authors the seen log touches
    size: int
    newest: datetime | None  # the latest created_at or viewed_at among the stories
    # The order for walks that began after `newest`: it then depends only on which of the tray's stories the seen
    # log holds, and on which have expired, so pages of new walks reuse it until its first story expires.
    arranged: _Arranged | None = None
    # Each story's JSON, made when a page first serves it: a tray holds every story of the feed (25,000 at
    # 50,000 active stories), most of which no page of the read's lifetime shows.
    heads: dict[UUID, bytes] = field(default_factory=dict)


class _Arranged(NamedTuple):
    seen: frozenset[UUID]
    placed: list[Placed]
    until: datetime | None  # the first expiry among the stories placed


class ServedStory(NamedTuple):
    story: Story
    head: bytes  # its JSON object without media and without the closing brace (`present`)
    seen: bool


class ServedAuthor(NamedTuple):
    """An author of a page: their place (for the next cursor), and each live story with `seen`."""

    key: Key
    author: TrayAuthor
    stories: list[ServedStory]


class TrayPage(NamedTuple):
    authors: list[ServedAuthor]
    more: bool


@dataclass(slots=True)
class TrayCache:
    """Tray pages, read through the cache. Safe to share between tasks."""

    store: TrayStore
    versions: GraphVersions
    seen: SeenLog
    metrics: Metrics
    ttl: float
    # The story's JSON object without media (`media_url` null) and without its closing brace, made once per
    # read from the store, when first served: a page closes it with `"seen"` (stories/api/json_shapes.py `story_head`).
    present: Callable[[Story], bytes]
    max_stories: int = DEFAULT_MAX_STORIES
    _trays: OrderedDict[UUID, _Tray] = field(default_factory=OrderedDict)
    _stories: int = 0

    async def page(self, viewer_id: UUID, now: datetime, start: datetime, after: Key | None, limit: int) -> TrayPage:
        """The `limit` authors after `after` of the viewer's tray, ordered for a walk that began at `start`."""
        if self.ttl <= 0:
            return self._page(self._read(viewer_id, await self.store.tray(viewer_id, now)), now, start, after, limit)
        overlay = await self.seen.recent(viewer_id)
        tray = self._trays.get(viewer_id)
        if tray is not None and trio.current_time() - tray.stored_at >= self.ttl:
            tray = None
        page = None
        if tray is not None and overlay is not None:
            page = self._page(tray, now, start, after, limit, overlay)
        story_ids = () if page is None else [served.story.id for entry in page.authors for served in entry.stories]
        snapshot = None if overlay is None else await self.versions.current(viewer_id, story_ids)
        if snapshot is None:
            self.metrics.tray_cache_requests.labels(result="bypass").inc()
            return self._page(self._read(viewer_id, await self.store.tray(viewer_id, now)), now, start, after, limit)
        if tray is not None and page is not None and tray.version == snapshot.version and not snapshot.deleted:
            self._trays.move_to_end(viewer_id)
            self.metrics.tray_cache_requests.labels(result="hit").inc()
            return page
        self.metrics.tray_cache_requests.labels(result="miss").inc()
        tray = self._read(viewer_id, await self.store.tray(viewer_id, now), snapshot.version)
        self._keep(viewer_id, tray)
        return self._page(tray, now, start, after, limit, overlay)

    def _page(
        self,
        tray: _Tray,
        now: datetime,
        start: datetime,
        after: Key | None,
        limit: int,
        overlay: dict[UUID, datetime] | None = None,
    ) -> TrayPage:
        views = {story: at for story, at in (overlay or {}).items() if story in tray.story_authors}
        page, more = page_after(self._arranged(tray, now, start, views), after, limit)
        served = [
            ServedAuthor(
                entry.key,
                entry.author,
                [
                    ServedStory(
                        item.story,
                        self._head(tray, item.story),
                        item.viewed_at is not None or item.story.id in views,
                    )
                    for item in entry.stories
                ],
            )
            for entry in page
        ]
        return TrayPage(served, more)

    def _head(self, tray: _Tray, story: Story) -> bytes:
        head = tray.heads.get(story.id)
        if head is None:
            head = tray.heads[story.id] = self.present(story)
        return head

    @staticmethod
    def _arranged(tray: _Tray, now: datetime, start: datetime, views: dict[UUID, datetime]) -> list[Placed]:
        stable = (tray.newest is None or tray.newest <= start) and all(at <= start for at in views.values())
        seen = frozenset(views)
        memo = tray.arranged
        if stable and memo is not None and memo.seen == seen and (memo.until is None or now < memo.until):
            return memo.placed
        touched = frozenset(tray.story_authors[story] for story in views)
        placed = arrange(tray.authors, now, start, views, touched)
        if stable:
            until = min((item.story.expires_at for entry in placed for item in entry.stories), default=None)
            tray.arranged = _Arranged(seen, placed, until)
        return placed

    def _read(self, viewer_id: UUID, rows: Sequence[TrayStory], version: int = 0) -> _Tray:
        items = [TrayItem(row.story, row.viewed_at) for row in rows]
        instants = [item.story.created_at for item in items] + [i.viewed_at for i in items if i.viewed_at is not None]
        return _Tray(
            version=version,
            stored_at=trio.current_time(),
            authors=gather(items, viewer_id),
            story_authors={item.story.id: item.story.author_id for item in items},
            size=len(items),
            newest=max(instants, default=None),
        )

    def _keep(self, viewer_id: UUID, tray: _Tray) -> None:
        replaced = self._trays.pop(viewer_id, None)
        if replaced is not None:
            self._stories -= replaced.size
        self._trays[viewer_id] = tray
        self._stories += tray.size
        while self._stories > self.max_stories and len(self._trays) > 1:
            _, evicted = self._trays.popitem(last=False)
            self._stories -= evicted.size

    async def viewed(self, viewer_id: UUID, story_id: UUID, viewed_at: datetime) -> None:
        """Call after the viewer's view of someone else's story has committed (a repeat too: harmless)."""
        if self.ttl > 0:
            await self.seen.viewed(viewer_id, story_id, viewed_at)
