"""The tray and an author's stories (API.md "The tray ... and an author's stories")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.json_io import json_response
from stories.api.json_shapes import seen_story, story_head, story_json
from stories.api.openapi import STORY_EXAMPLE, TRAY_EXAMPLE, json_answer, paging, path_id, ref
from stories.api.paging import cursor_arg, limit_arg
from stories.clock import rfc3339
from stories.errors import NotFound
from stories.tray import decode_tray_cursor, encode_tray_cursor

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from quart import Response

    from stories.media.link import StorageLink
    from stories.store.models import Story
    from stories.tray_cache import ServedAuthor, TrayPage

__all__ = ["DEFAULT_TRAY_LIMIT", "MAX_TRAY_LIMIT", "blueprint"]

blueprint = DeclaredBlueprint("tray", __name__)

DEFAULT_TRAY_LIMIT = 20
MAX_TRAY_LIMIT = 50


def _story(
    story: Story, head: bytes, seen: bool, media: StorageLink | None, now: datetime
) -> orjson.Fragment | dict[str, Any]:
    """The cached JSON closed with `seen`, unless the story has media: its media_url is signed for each read."""
    if story.media_key is None or media is None:
        return seen_story(head, seen)
    return {**story_json(story, media.media_url(story, now)), "seen": seen}


def _group(
    entry: ServedAuthor, page: TrayPage, media: StorageLink | None, now: datetime
) -> orjson.Fragment | dict[str, Any]:
    """The group's JSON: made once per read and `seen` state, unless a story's media_url is signed for this read."""
    rendered = page.rendered.get(entry.memo)
    if rendered is not None:
        return rendered
    author = entry.author
    group = {
        "author": {"user_id": str(author.author_id), "display_name": author.author_name},
        "stories": [
            _story(item.story, page.head(item.story), seen, media, now)
            for item, seen in zip(entry.stories, entry.seen, strict=True)
        ],
        "has_unseen": not all(entry.seen),
        "latest_at": rfc3339(entry.stories[-1].story.created_at),
    }
    if media is not None and any(item.story.media_key is not None for item in entry.stories):
        return group
    # A copy of orjson's output (its own buffer keeps ~4 KB alive: present.py `story_fragment`).
    rendered = page.rendered[entry.memo] = orjson.Fragment(bytes(memoryview(orjson.dumps(group))))
    return rendered


GET_TRAY = Route(
    "GET",
    "/tray",
    "getTray",
    "stories",
    "Your feed's stories grouped by author: your own, then unseen, then seen",
    {"200": json_answer(ref("Tray"), "a page of authors", TRAY_EXAMPLE)},
    description="Exactly the active stories of your feed, grouped by author (oldest first, at most the "
    "author's 100 newest), each with `seen`. Your own group first, then authors with an unseen story, "
    "then the rest, each part by latest_at descending, then author id. `limit` counts authors. The "
    "cursor keeps the walk's start: views during a walk move no author between the parts. Your own "
    "views apply at once; the rest may lag by FEED_CACHE_SECONDS, as the feed.",
    parameters=paging(DEFAULT_TRAY_LIMIT, MAX_TRAY_LIMIT),
    table_answer="`200` page of authors with their stories",
)


@blueprint.declare(GET_TRAY)
async def tray() -> Response:
    limit = limit_arg(DEFAULT_TRAY_LIMIT, MAX_TRAY_LIMIT)
    cursor = cursor_arg(decode_tray_cursor)
    app = deps()
    now = app.clock.now()
    # A walk's first page starts it; every later page is ordered as of that start (stories/tray.py).
    start = now if cursor is None else cursor.start
    page = await app.trays.page(current_user_id(), now, start, None if cursor is None else cursor.after, limit)
    next_cursor = encode_tray_cursor(start, page.authors[-1].key) if page.more else None
    groups = [_group(entry, page, app.media, now) for entry in page.authors]
    return json_response({"authors": groups, "next_cursor": next_cursor})


GET_AUTHOR_STORIES = Route(
    "GET",
    "/users/{id}/stories",
    "getAuthorStories",
    "stories",
    "A user's active stories you may see, oldest first (at most 100), with `seen`",
    {"200": json_answer(ref("AuthorStories"), "the stories", {"stories": [{**STORY_EXAMPLE, "seen": True}]})},
    description="404 when the user is unknown or in a block with you (either way). Muting hides a user "
    "from your feed and tray, not from this list.",
    parameters=path_id("id", "user"),
    table_answer="`200` an author's stories",
)


@blueprint.declare(GET_AUTHOR_STORIES)
async def author_stories(id: UUID) -> Response:
    author_id = id
    app = deps()
    viewer_id = current_user_id()
    now = app.clock.now()
    rows = await app.store.author_stories(viewer_id, now, author_id)
    if rows is None:
        raise NotFound("no such user")
    # Read from the store each time: always as fresh as the caller's own views, so nothing to overlay.
    stories = [_story(row.story, story_head(row.story), row.viewed_at is not None, app.media, now) for row in rows]
    return json_response({"stories": stories})
