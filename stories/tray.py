"""The tray's grouping, order and walk cursor (API.md "The tray"): pure, given the stories and the views.

Order: the caller's own group, then authors with an unseen story, then the rest, each part by `latest_at`
descending, then author id. A walk keeps its start instant in the cursor, and an author's place is computed as
of that instant: from their stories created by then (all of them if none was) and the caller's views recorded
by then. So a view, or a story posted, during the walk moves no author, and every author comes once. (An author
deleting their newest story during a walk may move, since that story is gone: the one exception.)

The database places every author by these rules (stories/store/tray.py `TRAY_SQL`, keyed by `rank_key`) and
returns the stories of the authors a page serves; those are grouped (`gather`) and placed again per page
(`arrange`) so that the caller's later views and expiries move them: an author whose stories all existed at the
walk's start and whose views the overlay does not touch costs one comparison.
"""

from __future__ import annotations

import base64
import binascii
import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple
from uuid import UUID

from stories.errors import InvalidRequest

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from stories.store.models import Story

__all__ = [
    "Placed",
    "TrayAuthor",
    "TrayCursor",
    "TrayItem",
    "arrange",
    "decode_tray_cursor",
    "encode_tray_cursor",
    "gather",
    "page_after",
    "rank_key",
]

OWN, UNSEEN, SEEN = 0, 1, 2
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

# (part, -latest_at in microseconds, author id as an int): ints compare far faster than UUIDs do.
Key = tuple[int, int, int]


class TrayItem(NamedTuple):
    """A tray story, and when the caller viewed it as the store knew (None: not then)."""

    story: Story
    viewed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TrayAuthor:
    """One author's tray stories, oldest first, and their place when nothing since the read has moved them."""

    author_id: UUID
    author_name: str | None
    items: list[TrayItem]
    latest_at: datetime
    # Some story had no view when read; else the latest of their views (the group was all seen by then).
    unseen_when_read: bool
    last_viewed: datetime | None
    key: Key
    first_expiry: datetime  # STORY_TTL may have changed between their stories: not always the oldest's


class Placed(NamedTuple):
    """An author as served: their place in the order and their live stories, oldest first."""

    key: Key
    author: TrayAuthor
    stories: list[TrayItem]


@dataclass(frozen=True, slots=True)
class TrayCursor:
    """Where a walk is: its start, and the place of the last author served."""

    start: datetime
    after: Key


def _micros(instant: datetime) -> int:
    return (instant - _EPOCH) // _MICRO


def rank_key(part: int, latest_at: datetime, author_id: UUID) -> Key:
    """The place of an author in `part` whose latest story (as of the walk's start) is `latest_at`."""
    return (OWN, 0, 0) if part == OWN else (part, -_micros(latest_at), author_id.int)


def gather(items: Iterable[TrayItem], viewer_id: UUID) -> list[TrayAuthor]:
    """The store's rows grouped by author, each group oldest first."""
    by_author: dict[UUID, list[TrayItem]] = {}
    for item in items:
        by_author.setdefault(item.story.author_id, []).append(item)
    authors = []
    for author_id, group in by_author.items():
        group.sort(key=lambda item: (item.story.created_at, item.story.id.int))
        views = [item.viewed_at for item in group]
        unseen = any(at is None for at in views)
        latest_at = group[-1].story.created_at
        part = OWN if author_id == viewer_id else UNSEEN if unseen else SEEN
        authors.append(
            TrayAuthor(
                author_id=author_id,
                author_name=group[-1].story.author_name,
                items=group,
                latest_at=latest_at,
                unseen_when_read=unseen,
                last_viewed=None if unseen else max(at for at in views if at is not None),
                # The one own group needs no latest_at to be first, and a place that never moves mid-walk.
                key=(OWN, 0, 0) if part == OWN else (part, -_micros(latest_at), author_id.int),
                first_expiry=min(item.story.expires_at for item in group),
            )
        )
    return authors


def arrange(
    authors: Iterable[TrayAuthor],
    now: datetime,
    start: datetime,
    overlay: Mapping[UUID, datetime],
    overlay_authors: frozenset[UUID],
) -> list[Placed]:
    """Every author with a live story, placed for a walk that began at `start` (unsorted). `overlay`: the caller's
    views the store may not have known of when it was read (story id -> viewed at), from stories of the
    `overlay_authors`."""
    placed = []
    for author in authors:
        stories = author.items
        if author.first_expiry <= now:
            stories = [item for item in stories if item.story.expires_at > now]
            if not stories:
                continue
        if author.key[0] == OWN or (
            author.author_id not in overlay_authors
            and stories is author.items
            and author.latest_at <= start
            and (author.unseen_when_read or (author.last_viewed is not None and author.last_viewed <= start))
        ):
            placed.append(Placed(author.key, author, stories))
        else:
            placed.append(Placed(_key_slowly(author, stories, start, overlay), author, stories))
    return placed


def _key_slowly(author: TrayAuthor, stories: list[TrayItem], start: datetime, overlay: Mapping[UUID, datetime]) -> Key:
    views = [item.viewed_at if item.viewed_at is not None else overlay.get(item.story.id) for item in stories]
    started = [(item, at) for item, at in zip(stories, views, strict=True) if item.story.created_at <= start]
    if not started:
        started = list(zip(stories, views, strict=True))
    unseen = any(at is None or at > start for _, at in started)
    latest = started[-1][0].story.created_at
    return (UNSEEN if unseen else SEEN, -_micros(latest), author.author_id.int)


def page_after(placed: list[Placed], after: Key | None, limit: int) -> tuple[list[Placed], bool]:
    """The `limit` authors after `after` (from the first without it), and whether more follow."""
    first = 0 if after is None else bisect.bisect_right(placed, after, key=lambda entry: entry.key)
    return placed[first : first + limit], len(placed) > first + limit


# The cursor is opaque text: base64 of "<start µs>:<part>:<-latest_at µs>:<author id>".


def encode_tray_cursor(start: datetime, key: Key) -> str:
    part, latest, author = key
    text = f"{_micros(start)}:{part}:{latest}:{UUID(int=author)}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_tray_cursor(raw: str) -> TrayCursor:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        start, part, latest, author = text.split(":")
        if int(part) not in (OWN, UNSEEN, SEEN):
            raise ValueError(part)
        return TrayCursor(_EPOCH + int(start) * _MICRO, (int(part), int(latest), UUID(author).int))
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidRequest("cursor: not a cursor this API issued", fields={"cursor": "invalid"}) from None
