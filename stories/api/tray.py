"""The tray and an author's stories (API.md "The tray ... and an author's stories")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from quart import Blueprint, Response, request

from stories.api.bodies import json_response
from stories.api.deps import current_user_id, deps
from stories.api.paging import limit_arg
from stories.api.present import seen_story, story_head, story_json
from stories.api.profiles import parse_user_id
from stories.clock import rfc3339
from stories.errors import NotFound
from stories.tray import decode_tray_cursor, encode_tray_cursor

if TYPE_CHECKING:
    from datetime import datetime

    from stories.media.link import StorageLink
    from stories.store.models import Story
    from stories.tray_cache import ServedAuthor, TrayPage

__all__ = ["DEFAULT_TRAY_LIMIT", "MAX_TRAY_LIMIT", "blueprint"]

blueprint = Blueprint("tray", __name__)

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


@blueprint.get("/tray")
async def tray() -> Response:
    limit = limit_arg(DEFAULT_TRAY_LIMIT, MAX_TRAY_LIMIT)
    raw_cursor = request.args.get("cursor")
    cursor = None if raw_cursor is None else decode_tray_cursor(raw_cursor)
    app = deps()
    now = app.clock.now()
    # A walk's first page starts it; every later page is ordered as of that start (stories/tray.py).
    start = now if cursor is None else cursor.start
    page = await app.trays.page(current_user_id(), now, start, None if cursor is None else cursor.after, limit)
    next_cursor = encode_tray_cursor(start, page.authors[-1].key) if page.more else None
    groups = [_group(entry, page, app.media, now) for entry in page.authors]
    return json_response({"authors": groups, "next_cursor": next_cursor})


@blueprint.get("/users/<id>/stories")
async def author_stories(id: str) -> Response:
    author_id = parse_user_id(id)
    app = deps()
    viewer_id = current_user_id()
    now = app.clock.now()
    rows = await app.store.author_stories(viewer_id, now, author_id)
    if rows is None:
        raise NotFound("no such user")
    # Read from the store each time: always as fresh as the caller's own views, so nothing to overlay.
    stories = [_story(row.story, story_head(row.story), row.viewed_at is not None, app.media, now) for row in rows]
    return json_response({"stories": stories})
