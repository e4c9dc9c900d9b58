"""How records look on the wire (API.md shapes), and the feed's opaque cursor."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from stories.clock import rfc3339
from stories.errors import InvalidRequest
from stories.store.models import FeedCursor

if TYPE_CHECKING:
    from stories.store.models import Follow, Reaction, Stats, Story, View

__all__ = ["decode_cursor", "encode_cursor", "follow_json", "reaction_json", "stats_json", "story_json", "view_json"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def story_json(story: Story, media_url: str | None = None) -> dict[str, Any]:
    """`media_url`: the presigned GET of the story's media (None without media or object storage)."""
    return {
        "id": str(story.id),
        "author_id": str(story.author_id),
        "text": story.text,
        "media_key": story.media_key,
        "media_url": media_url,
        "visibility": story.visibility,
        "created_at": rfc3339(story.created_at),
        "expires_at": rfc3339(story.expires_at),
        "view_count": story.view_count,
        "reaction_count": story.reaction_count,
    }


def view_json(view: View) -> dict[str, Any]:
    return {
        "story_id": str(view.story_id),
        "viewer_id": str(view.viewer_id),
        "viewed_at": rfc3339(view.viewed_at),
        "first_view": view.first_view,
    }


def reaction_json(reaction: Reaction) -> dict[str, Any]:
    return {
        "id": str(reaction.id),
        "story_id": str(reaction.story_id),
        "user_id": str(reaction.user_id),
        "emoji": reaction.emoji,
        "created_at": rfc3339(reaction.created_at),
    }


def follow_json(follow: Follow) -> dict[str, Any]:
    return {
        "follower_id": str(follow.follower_id),
        "followee_id": str(follow.followee_id),
        "created_at": rfc3339(follow.created_at),
    }


def stats_json(stats: Stats) -> dict[str, Any]:
    return {
        "posted": stats.posted,
        "views": stats.views,
        "unique_viewers": stats.unique_viewers,
        "reactions": stats.reactions,
    }


def encode_cursor(story: Story) -> str:
    """Opaque to clients: the (created_at in microseconds, id) of the last story served."""
    micros = (story.created_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"{micros}:{story.id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str) -> FeedCursor:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        micros, _, story_id = text.partition(":")
        return FeedCursor(created_at=_EPOCH + timedelta(microseconds=int(micros)), id=UUID(story_id))
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        raise InvalidRequest("cursor: not a cursor this API issued", fields={"cursor": "invalid"}) from None
