"""Stories: create, read, delete, feed, views, reactions and "seen by" (API.md "Stories").

Over 450 lines because each of its seven routes has its declaration (its whole OpenAPI operation, examples
included) beside its view; splitting the routes of one resource apart would hide more than it shows.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
import structlog
from quart import Response

from stories.actors.ratelimit import ACTION_REACTIONS, ACTION_STORIES
from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.idempotency import replayed, request_claim
from stories.api.json_io import JSON_CONTENT_TYPE, json_response, read_json_object
from stories.api.json_shapes import decode_cursor, encode_cursor, reaction_json, story_json, view_json, viewer_json
from stories.api.openapi import (
    ALICE,
    AT,
    BOB,
    CURSOR,
    IDEMPOTENCY_KEY,
    STORY,
    STORY_EXAMPLE,
    STORY_LINKS,
    VISIBILITY,
    error_answer,
    error_example,
    json_answer,
    key_reused,
    paging,
    path_id,
    ref,
    replay_header,
)
from stories.api.paging import cursor_arg, limit_arg, page_json
from stories.api.rate import check_rate
from stories.api.validate import invalid, optional_string, required_string
from stories.clock import to_millis
from stories.domain import EMOJI_ALIASES, REACTION_EMOJIS, VIEWERS_WINDOW
from stories.errors import ApiError, InvalidRequest, NotFound, RateLimited
from stories.store.models import Reaction, Replay, Story
from stories.store.uploads import UploadClaim

if TYPE_CHECKING:
    from stories.feed_cache import FeedEntry

__all__ = ["blueprint"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("stories", __name__)

VISIBILITIES = ("public", "friends", "private")
MAX_TEXT_LENGTH = 2200
MAX_AUDIENCE = 100
MAX_MEDIA_KEY_LENGTH = 512
DEFAULT_FEED_LIMIT = 20
MAX_FEED_LIMIT = 100
DEFAULT_VIEWERS_LIMIT = 50
_MEDIA_KEY_TAIL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")


def _not_found() -> NotFound:
    return NotFound("no such story (it may have expired, or is not visible to you)")


def _text(body: dict[str, Any]) -> str | None:
    text = optional_string(body, "text")
    if text is None:
        return None
    text = text.strip()
    if not 1 <= len(text) <= MAX_TEXT_LENGTH:
        raise invalid("text", f"must be 1 to {MAX_TEXT_LENGTH} characters after trimming")
    return text


def _media_key(body: dict[str, Any], user_id: UUID) -> str | None:
    key = optional_string(body, "media_key")
    if key is None:
        return None
    prefix = f"uploads/{user_id}/"
    tail = key.removeprefix(prefix)
    if not key.startswith(prefix) or not _MEDIA_KEY_TAIL.match(tail) or ".." in tail or len(key) > MAX_MEDIA_KEY_LENGTH:
        raise invalid("media_key", f"must be a key issued to you by POST /upload/presigned ({prefix}...)")
    return key


def _audience(body: dict[str, Any], visibility: str) -> list[UUID]:
    raw = body.get("audience_user_ids")
    if raw is None:
        return []
    if visibility != "friends":
        raise invalid("audience_user_ids", "is allowed only with visibility 'friends'")
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise invalid("audience_user_ids", "must be a list of user ids")
    try:
        ids = list(dict.fromkeys(UUID(item) for item in raw))
    except ValueError:
        raise invalid("audience_user_ids", "every entry must be a user id (UUID)") from None
    if len(ids) > MAX_AUDIENCE:
        raise invalid("audience_user_ids", f"at most {MAX_AUDIENCE} distinct users")
    return ids


# The body of POST /stories, as `create_story` reads it.
NEW_STORY = {
    "type": "object",
    "required": ["visibility"],
    "anyOf": [{"required": ["text"]}, {"required": ["media_key"]}],
    "properties": {
        "text": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_TEXT_LENGTH,
            "pattern": r"\S",
            "description": f"1 to {MAX_TEXT_LENGTH} characters after trimming",
        },
        "media_key": {
            "type": "string",
            "maxLength": MAX_MEDIA_KEY_LENGTH,
            "description": "a media_key from POST /upload/presigned (yours, issued in the last 24 h, not used "
            "by another story), its file uploaded: 400 media_not_uploaded when the store answers and has no "
            "object under it",
        },
        "visibility": VISIBILITY,
        "audience_user_ids": {
            "type": "array",
            "items": {"type": "string", "format": "uuid"},
            "maxItems": MAX_AUDIENCE,
            "description": f"only with visibility friends: at most {MAX_AUDIENCE} distinct existing users, "
            "who must also follow you to see the story; empty: no list",
        },
    },
}


CREATE_STORY = Route(
    "POST",
    "/stories",
    "createStory",
    "stories",
    "Create a story",
    {
        "201": json_answer(
            ref("Story"),
            "created (or, for a retry with the same Idempotency-Key and body, the original story)",
            STORY_EXAMPLE,
            headers=replay_header("true when this answers a retry and nothing was created"),
            links=STORY_LINKS,
        ),
        "400": error_answer(
            "invalid_request: malformed JSON, wrong types or invalid values; media_not_uploaded: the "
            "store has no object under media_key",
            ("invalid_request", "media_not_uploaded"),
            error_example(
                "invalid_request",
                "visibility: must be one of public, friends, private",
                visibility="invalid",
            ),
        ),
        **key_reused("body"),
    },
    errors=(RateLimited,),
    description=lambda settings: (
        f"At least one of text and media_key. Expires STORY_TTL_SECONDS after creation. "
        f"Rate limit: {settings.rate_limit_stories_per_minute} per minute per user (429). With an Idempotency-Key, "
        "a retry with the same key and body within 24 h answers the original 201 and creates nothing: retry a 503 "
        "that way."
    ),
    body=NEW_STORY,
    body_example={"text": "Hello from the lake", "visibility": "public"},
    parameters=[IDEMPOTENCY_KEY],
    table_answer="`201` story",
)


@blueprint.declare(CREATE_STORY)
async def create_story() -> Response:
    body = await read_json_object()
    user_id = current_user_id()
    visibility = required_string(body, "visibility")
    if visibility not in VISIBILITIES:
        raise invalid("visibility", f"must be one of {', '.join(VISIBILITIES)}")
    text, media_key = _text(body), _media_key(body, user_id)
    if text is None and media_key is None:
        raise InvalidRequest("a story needs text, media_key or both", fields={"text": "text or media_key is required"})
    audience = _audience(body, visibility)

    app = deps()
    now = to_millis(app.clock.now())
    story = Story(
        id=uuid.uuid4(),
        author_id=user_id,
        text=text,
        media_key=media_key,
        visibility=visibility,
        created_at=now,
        expires_at=now + timedelta(seconds=app.settings.story_ttl_seconds),
    )
    # Computed here, not in the store's thread (no request context there); it depends on nothing the insert adds.
    media_url = _media_url(story)

    def render(created: Story) -> bytes:
        return orjson.dumps(story_json(created, media_url))

    claim = request_claim(body, render)
    if claim is not None:
        # A retry is answered before the rate limit: it creates nothing, so it never costs a token.
        replay = await app.store.idempotent_replay(user_id, claim, now)
        if replay is not None:
            return _replayed(replay, claim.key)
    await check_rate(ACTION_STORIES, "story creation")
    upload = None
    if media_key is not None:
        # Copied to the story's own key before the transaction (no network call while it holds locks): readers
        # get the copy, which no upload URL can change. None when the store is off or silent, and the story is
        # created all the same (API.md "Graceful degradation").
        upload = UploadClaim(media_key, None if app.media is None else await app.media.publish(media_key, story.id))
    try:
        async with after_commit(app) as effects:
            # The author's own new story shows in their feed at once.
            effects.feed_changed(user_id)
            created = await app.store.create_story(story, audience, claim, upload)
    except ApiError:
        # Refused, nothing written (a key not the caller's to use, another request's Idempotency-Key body).
        await _unpublish(upload, story.id)
        raise
    if isinstance(created, Replay):
        await _unpublish(upload, story.id)
        return _replayed(created, claim.key if claim else "")
    app.metrics.stories_created.inc()
    log.info("story_created", story_id=str(story.id), visibility=visibility, audience=len(audience))
    return Response(render(created), 201, content_type=JSON_CONTENT_TYPE)


async def _unpublish(upload: UploadClaim | None, story_id: UUID) -> None:
    """The story was not created: the copy made for it goes (no row of the lifecycle's names it)."""
    app = deps()
    if upload is not None and upload.uploaded and app.media is not None:
        await app.media.unpublish(upload.key, story_id)


def _replayed(replay: Replay, key: str) -> Response:
    """A story's stored response, with a fresh media_url: the stored one may have expired (API.md)."""
    app = deps()
    stored = orjson.loads(replay.response)
    if app.media is not None and stored.get("media_key") is not None:
        story = Story(
            id=UUID(stored["id"]),
            author_id=UUID(stored["author_id"]),
            text=stored["text"],
            media_key=stored["media_key"],
            visibility=stored["visibility"],
            created_at=datetime.fromisoformat(stored["created_at"]),
            expires_at=datetime.fromisoformat(stored["expires_at"]),
        )
        replay = Replay(orjson.dumps({**stored, "media_url": _media_url(story)}))
    return replayed(replay, key)


# Route parameters are named `id` so metrics and docs show API.md's template, /stories/{id}.
GET_STORY = Route(
    "GET",
    "/stories/{id}",
    "getStory",
    "stories",
    "Read an active story you may see",
    {"200": json_answer(ref("Story"), "the story", STORY_EXAMPLE)},
    description="404 when it is unknown, expired, deleted or not visible to you.",
    parameters=path_id("id", "story"),
    table_answer="`200` story",
)


@blueprint.declare(GET_STORY)
async def get_story(id: UUID) -> Response:
    app = deps()
    story = await app.store.visible_story(current_user_id(), app.clock.now(), id)
    if story is None:
        raise _not_found()
    return json_response(story_json(story, _media_url(story)))


def _media_url(story: Story) -> str | None:
    app = deps()
    return None if app.media is None else app.media.media_url(story, app.clock.now())


def _feed_story(entry: FeedEntry, storage: bool) -> orjson.Fragment | dict[str, Any]:
    """The story as the feed cache rendered it, unless it has media: its media_url is signed for each read."""
    story = entry.story
    if story.media_key is None or not storage:
        return entry.json
    return story_json(story, _media_url(story))


GET_FEED = Route(
    "GET",
    "/feed",
    "getFeed",
    "stories",
    "Active stories you may see, newest first",
    {"200": json_answer(ref("Feed"), "a page", {"stories": [STORY_EXAMPLE], "next_cursor": CURSOR})},
    description="Your own, friends stories of the people you follow, and public ones; blocked users' "
    "(either way) and muted users' left out. Keyset pages: walking them returns every story once. "
    "Other users' new stories and the counters may lag by FEED_CACHE_SECONDS.",
    parameters=paging(DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT),
    table_answer="`200` page of stories",
)


@blueprint.declare(GET_FEED)
async def feed() -> Response:
    limit = limit_arg(DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT)
    cursor = cursor_arg(decode_cursor)
    app = deps()
    now = app.clock.now()
    # One row more than asked tells whether another page exists, without a count.
    entries = await app.feeds.entries(current_user_id(), now, limit + 1, cursor)
    page = entries[:limit]
    next_cursor = encode_cursor(page[-1].story) if len(entries) > limit else None
    # A cached page may hold stories that expired since it was read; the cursor still moves past them.
    live = [_feed_story(entry, app.media is not None) for entry in page if entry.story.expires_at > now]
    return json_response({"stories": live, "next_cursor": next_cursor})


VIEW_STORY = Route(
    "POST",
    "/stories/{id}/view",
    "viewStory",
    "stories",
    "Record a view",
    {
        "200": json_answer(
            ref("View"),
            "the view (first_view false for a repeat, and for the author's own view, not recorded)",
            {"story_id": STORY, "viewer_id": BOB, "viewed_at": AT, "first_view": True},
        )
    },
    description="Idempotent: one view per story and viewer. The first sends story.viewed to the author.",
    parameters=path_id("id", "story"),
    table_answer="`200` view",
)


@blueprint.declare(VIEW_STORY)
async def view_story(id: UUID) -> Response:
    app = deps()
    story_id = id
    async with after_commit(app) as effects:
        # The event is the stored view: the relay reads it from the log, also when this call was cut off while
        # its statement still committed.
        effects.wake_relay()
        effects.counters_changed(story_id)
        view = await app.store.record_view(current_user_id(), to_millis(app.clock.now()), story_id)
        if view is not None and not view.first_view:
            # A repeat (or the author's own view, never recorded): nothing changed.
            effects.discard()
    if view is None:
        raise _not_found()
    if view.first_view:
        app.metrics.story_views.inc()
    if view.author_id != view.viewer_id:
        # The caller's tray shows it seen at once, whatever is cached (a repeat re-records it: harmless).
        await app.trays.viewed(view.viewer_id, view.story_id, view.viewed_at)
    log.info("story_viewed", story_id=str(view.story_id), viewer_id=str(view.viewer_id), first_view=view.first_view)
    return json_response(view_json(view))


def _emoji(body: dict[str, Any]) -> str:
    emoji = required_string(body, "emoji")
    emoji = EMOJI_ALIASES.get(emoji, emoji)
    if emoji not in REACTION_EMOJIS:
        raise invalid("emoji", f"must be one of {' '.join(REACTION_EMOJIS)}")
    return emoji


def _render_reaction(reaction: Reaction) -> bytes:
    return orjson.dumps(reaction_json(reaction))


REACT_TO_STORY = Route(
    "POST",
    "/stories/{id}/reactions",
    "reactToStory",
    "stories",
    "React with an emoji",
    {
        "201": json_answer(
            ref("Reaction"),
            "the reaction (or, for a retry with the same Idempotency-Key and body, the original one)",
            {"id": ALICE, "story_id": STORY, "user_id": BOB, "emoji": "🔥", "created_at": AT},
            headers=replay_header("true when this answers a retry and nothing was added"),
        ),
        **key_reused("body or story"),
    },
    errors=(RateLimited,),
    description=lambda settings: (
        f"One of {' '.join(REACTION_EMOJIS)} (❤ without the variation selector is taken as ❤️). "
        "A user may react more than once. Sends story.reacted to the author. Rate limit: "
        f"{settings.rate_limit_reactions_per_minute} per minute per user (429). With an Idempotency-Key, a retry "
        "with the same key, story and body within 24 h answers the original 201 and adds nothing: a retried "
        "reaction is never counted twice."
    ),
    body={
        "type": "object",
        "required": ["emoji"],
        "properties": {"emoji": {"enum": [*REACTION_EMOJIS, "❤"]}},
    },
    body_example={"emoji": "🔥"},
    parameters=[
        *path_id("id", "story"),
        IDEMPOTENCY_KEY,
    ],
    table_answer="`201` reaction",
)


@blueprint.declare(REACT_TO_STORY)
async def react(id: UUID) -> Response:
    parsed_id = id
    body = await read_json_object()
    emoji = _emoji(body)
    app = deps()
    user_id, now = current_user_id(), to_millis(app.clock.now())
    # The story is part of the request: one key on two stories is a reuse (422), not a replay.
    claim = request_claim(body, _render_reaction, scope=f"reactions {parsed_id}")
    if claim is not None:
        replay = await app.store.idempotent_replay(user_id, claim, now)
        if replay is not None:
            return replayed(replay, claim.key)
    await check_rate(ACTION_REACTIONS, "reacting")
    async with after_commit(app) as effects:
        # As for views: the event is the stored reaction (self-reactions are stored but are no event).
        effects.wake_relay()
        effects.counters_changed(parsed_id)
        reaction = await app.store.add_reaction(user_id, now, parsed_id, uuid.uuid4(), emoji, claim)
    if isinstance(reaction, Replay):
        return replayed(reaction, claim.key if claim else "")
    if reaction is None:
        raise _not_found()
    app.metrics.reactions.inc()
    log.info("reaction_added", reaction_id=str(reaction.id), story_id=str(reaction.story_id), emoji=emoji)
    return json_response(reaction_json(reaction), 201)


DELETE_STORY = Route(
    "DELETE",
    "/stories/{id}",
    "deleteStory",
    "stories",
    "Delete your story",
    {"204": {"description": "deleted (also when it already was, or has expired)"}},
    description="It disappears from every read at once; its media is removed by the expiry worker. "
    "404 for anyone but the author.",
    parameters=path_id("id", "story"),
    table_answer="`204`",
)


@blueprint.declare(DELETE_STORY)
async def delete_story(id: UUID) -> Response:
    story_id = id
    app = deps()
    author_id = current_user_id()
    async with after_commit(app) as effects:
        # Also on a repeat: the first attempt may have committed and been cut off before it told the cache.
        effects.story_deleted(author_id, story_id)
        deleted = await app.store.delete_story(author_id, story_id, to_millis(app.clock.now()))
        if not deleted:
            effects.discard()
    if not deleted:
        raise NotFound("no such story of yours")
    log.info("story_deleted", story_id=str(story_id))
    return Response(b"", 204)


LIST_VIEWERS = Route(
    "GET",
    "/stories/{id}/viewers",
    "listViewers",
    "stories",
    "Seen by: who viewed your story, most recent view first",
    {
        "200": json_answer(
            ref("Viewers"),
            "a page",
            {
                "viewers": [{"user_id": BOB, "display_name": "Bob", "viewed_at": AT, "reactions": ["🔥"]}],
                "next_cursor": None,
            },
        )
    },
    description="For the author only, for stories created in the last 7 days (active, expired or "
    "deleted); users the author blocked are left out.",
    parameters=path_id("id", "story") + paging(DEFAULT_VIEWERS_LIMIT),
    table_answer='`200` page of viewers ("seen by")',
)


@blueprint.declare(LIST_VIEWERS)
async def viewers(id: UUID) -> Response:
    story_id = id
    limit, cursor = limit_arg(DEFAULT_VIEWERS_LIMIT), cursor_arg()
    app = deps()
    since = app.clock.now() - VIEWERS_WINDOW
    rows = await app.store.viewers(current_user_id(), story_id, since, limit + 1, cursor)
    if rows is None:
        raise NotFound("no such story of yours (viewers are kept for 7 days)")
    return json_response(page_json("viewers", rows, limit, viewer_json))
