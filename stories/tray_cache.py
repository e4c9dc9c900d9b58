"""The tray cache: a stretch of a viewer's tray per graph version, with their own views laid over it.

A miss reads, in one round trip, the authors of the page and the next few, placed by the database, with their
stories and the viewer's views of them (stories/store/tray.py): a *stretch* of the order, holding every author
placed in it. It is kept for FEED_CACHE_SECONDS under the viewer's graph version, the feed cache's
(stories/feed_cache.py), and is served while that version stands and no story on the page is marked deleted: the
feed's rules, so the tray lags exactly as the feed may. A page past the stretch's end reads again. The viewer's
own views must apply at once, on every process, without throwing the read away: the view route records each in a
short *seen log* (`SeenLog.viewed`), and every page lays the log over the stretch (`recent`), moving its authors
(a view only ever moves an author later, so views of authors outside a stretch read from the first author do not
touch it). The log only has to outlive the reads it corrects (FEED_CACHE_SECONDS), so it stays small. In Redis
when configured (`<prefix>trayseen:<viewer>`, a sorted set by view time), else in this process (exact when it is
the only one; the runtime turns both caches off for several without Redis).

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
from stories.tray import Placed, TrayItem, arrange, gather, page_after, rank_key

if TYPE_CHECKING:
    from collections.abc import Callable

    import coredis
    import orjson

    from stories.feed_cache import GraphVersions
    from stories.metrics import Metrics
    from stories.redis import RedisLink
    from stories.store.models import Story
    from stories.store.tray import TrayRead
    from stories.tray import Key, TrayAuthor

__all__ = ["LocalSeenLog", "RedisSeenLog", "SeenLog", "ServedAuthor", "TrayCache", "TrayPage"]

log = structlog.get_logger()

# Tray stories kept per process, in whole trays (the least recently read go first), as for the feed's pages.
DEFAULT_MAX_STORIES = 40_000
# A seen-log entry outlives the reads it corrects by this much more, for clocks of different hosts that disagree.
CLOCK_SLACK = timedelta(seconds=60)
# Authors whose stories a miss reads, at least: a walk's next pages and a tap through the first authors are hits.
PREFETCH_AUTHORS = 20


class TrayStore(Protocol):
    async def tray(
        self, viewer_id: UUID, now: datetime, start: datetime, after: tuple[int, int, UUID] | None, authors: int
    ) -> TrayRead: ...


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
    """A read of the store: a stretch of the order, the authors after the place `after` up to `end`, each with
    their stories; every author of the tray placed in that stretch when read is in it."""

    version: int
    stored_at: float
    start: datetime  # the walk start the store placed the authors for
    fresh: bool  # read at that start with nothing newer, from the first author: it holds for later walks too
    after: Key | None
    end: Key | None  # the last author's place, or None: the stretch runs to the end of the tray
    absorbed: frozenset[UUID]  # the seen log's views when read: the store knew them
    authors: list[TrayAuthor]
    story_authors: dict[UUID, UUID]  # story id -> author id
    size: int
    # The order of the stretch for the seen log's current views, reused until its first story expires.
    arranged: _Arranged | None = None
    # Each story's JSON, made when a page first serves it, and the groups' as pages rendered them.
    heads: dict[UUID, bytes] = field(default_factory=dict)
    rendered: dict[tuple[object, ...], orjson.Fragment] = field(default_factory=dict)

    def serves(self, start: datetime, after: Key | None) -> bool:
        """Whether this stretch holds for a page after `after` of a walk that began at `start`."""
        if self.after is not None and (after is None or after < self.after):
            return False
        return start == self.start or (self.fresh and start > self.start)


class _Arranged(NamedTuple):
    seen: frozenset[UUID]
    start: datetime | None  # None: the order holds for every start the tray serves
    placed: list[Placed]
    until: datetime | None  # the first expiry among the stories placed


class ServedAuthor(NamedTuple):
    """An author of a page: their place (for the next cursor), their live stories and whether each is seen."""

    key: Key
    author: TrayAuthor
    stories: list[TrayItem]
    seen: list[bool]
    # Tells this group (its stories and their `seen`) from every other of the same read: the key of its
    # rendering in `TrayPage.rendered`.
    memo: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class TrayPage:
    authors: list[ServedAuthor]
    more: bool
    # The caller's renderings of groups, by `ServedAuthor.memo`, kept with the read they come from: a page of
    # groups unchanged since an earlier page is not rendered again.
    rendered: dict[tuple[object, ...], orjson.Fragment]
    # Each story's JSON object without media and without its closing brace (`TrayCache.present`), made once per
    # read.
    head: Callable[[Story], bytes]


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
            return self._fresh_page(await self._read(viewer_id, now, start, after, limit, {}), now, after, limit)
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
            return self._fresh_page(await self._read(viewer_id, now, start, after, limit, {}), now, after, limit)
        if tray is not None and page is not None and tray.version == snapshot.version and not snapshot.deleted:
            self._trays.move_to_end(viewer_id)
            self.metrics.tray_cache_requests.labels(result="hit").inc()
            return page
        self.metrics.tray_cache_requests.labels(result="miss").inc()
        assert overlay is not None  # a snapshot is only taken with the seen log known
        read = await self._read(viewer_id, now, start, after, max(limit, PREFETCH_AUTHORS), overlay, snapshot.version)
        if after is None or tray is None or tray.version != snapshot.version or page is not None:
            # A stretch further down a walk does not replace the first one while that still serves new walks.
            self._keep(viewer_id, read)
        return self._fresh_page(read, now, after, limit, overlay)

    def _fresh_page(
        self, tray: _Tray, now: datetime, after: Key | None, limit: int, overlay: dict[UUID, datetime] | None = None
    ) -> TrayPage:
        page = self._page(tray, now, tray.start, after, limit, overlay or {})
        if page is None:  # the store read the stories of the authors after `after` in this very order
            raise RuntimeError("the tray's order disagrees with the store's")
        return page

    def _page(
        self,
        tray: _Tray,
        now: datetime,
        start: datetime,
        after: Key | None,
        limit: int,
        overlay: dict[UUID, datetime],
    ) -> TrayPage | None:
        """The page from this read, or None when it cannot tell: a walk it was not placed for, a view that may
        move an author it did not read into its stretch, or a page running past the stretch's end."""
        if not tray.serves(start, after):
            return None
        views = {}
        for story, at in overlay.items():
            if story in tray.story_authors:
                views[story] = at
            elif story not in tray.absorbed and tray.after is not None and at <= start:
                # An author placed before the stretch may move into it. (A view only moves an author later, and
                # a stretch from the first author has none before it: any other author is after its end.)
                return None
        placed = self._arranged(tray, now, start, views)
        page, more = page_after(placed, after, limit)
        if not more and tray.end is not None:
            return None
        served = []
        for entry in page:
            seen = [item.viewed_at is not None or item.story.id in views for item in entry.stories]
            # The author's stories as read, or those of them still live (expiry only ever drops some).
            stories = None if entry.stories is entry.author.items else tuple(i.story.id for i in entry.stories)
            served.append(
                ServedAuthor(entry.key, entry.author, entry.stories, seen, (entry.author.author_id, stories, *seen))
            )
        return TrayPage(served, more, tray.rendered, lambda story: self._head(tray, story))

    def _head(self, tray: _Tray, story: Story) -> bytes:
        head = tray.heads.get(story.id)
        if head is None:
            head = tray.heads[story.id] = self.present(story)
        return head

    @staticmethod
    def _arranged(tray: _Tray, now: datetime, start: datetime, views: dict[UUID, datetime]) -> list[Placed]:
        # Views after the start count as unseen (they were not recorded by then): the order depends on the start.
        moved = frozenset(story for story in views if story not in tray.absorbed)
        at = None if all(views[story] <= start for story in moved) else start
        memo = tray.arranged
        if memo is not None and memo.seen == moved and memo.start == at and (memo.until is None or now < memo.until):
            return memo.placed
        touched = frozenset(tray.story_authors[story] for story in moved)
        placed = arrange(tray.authors, now, start, views, touched)
        if tray.end is not None:
            # An author moved past the end: the authors between are not known here.
            placed = [entry for entry in placed if entry.key <= tray.end]
        placed.sort(key=lambda entry: entry.key)
        until = min((item.story.expires_at for entry in placed for item in entry.stories), default=None)
        tray.arranged = _Arranged(moved, at, placed, until)
        return placed

    async def _read(
        self,
        viewer_id: UUID,
        now: datetime,
        start: datetime,
        after: Key | None,
        authors: int,
        overlay: dict[UUID, datetime],
        version: int = 0,
    ) -> _Tray:
        """The `authors` first authors after `after`, and one more to tell whether the tray goes on."""
        read = await self.store.tray(
            viewer_id, now, start, None if after is None else (after[0], after[1], UUID(int=after[2])), authors + 1
        )
        items = [TrayItem(row.story, row.viewed_at) for row in read.stories]
        last = read.ranks[-1] if len(read.ranks) > authors else None
        return _Tray(
            version=version,
            stored_at=trio.current_time(),
            start=start,
            fresh=after is None and start >= now and all(item.story.created_at <= start for item in items),
            after=after,
            end=None if last is None else rank_key(last.part, last.latest_at, last.author_id),
            absorbed=frozenset(overlay),
            authors=gather(items, viewer_id),
            story_authors={item.story.id: item.story.author_id for item in items},
            size=len(items),
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
