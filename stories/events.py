"""Realtime events: frozen facts sent to a story's author (API.md "Realtime").

Every event is a stored row (a first view or a reaction, schema/0010_story_events.sql) and its id is the row's
place in the event log, `EventId(xid, seq)`: ids order an author's events, and a row that commits late never
lands behind an id already served (stories/store/events.py says why; the id itself is stories/domain.py's).
`client_text()` is the WebSocket message of API.md, `{"type", "id", "payload"}`; the author id is not in it (the
socket already belongs to the author).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import orjson

from stories.clock import rfc3339
from stories.domain import EventId, MalformedEventId

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

__all__ = ["RESYNC_TEXT", "Event", "EventId", "MalformedEventId", "StoryReacted", "StoryViewed"]

# Tells a client that events it missed are gone from the log (older than 7 days, or more than the replay
# limit): it refetches what it shows instead.
RESYNC_TEXT = orjson.dumps({"type": "resync"}).decode("utf-8")


@dataclass(frozen=True, slots=True)
class _StoryEvent:
    """What every event is (its place in the log, the author it goes to, the story) and what it sends a client:
    API.md's `{"type", "id", "payload"}`."""

    TYPE: ClassVar[str]

    id: EventId
    author_id: UUID
    story_id: UUID

    def client_payload(self) -> dict[str, str]:
        raise NotImplementedError

    def client_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": str(self.id), "payload": self.client_payload()}

    def client_text(self) -> str:
        return orjson.dumps(self.client_json()).decode("utf-8")


@dataclass(frozen=True, slots=True)
class StoryViewed(_StoryEvent):
    """Someone other than the author viewed `story_id` for the first time."""

    TYPE: ClassVar[str] = "story.viewed"

    viewer_id: UUID
    viewed_at: datetime

    def client_payload(self) -> dict[str, str]:
        return {"story_id": str(self.story_id), "viewer_id": str(self.viewer_id), "viewed_at": rfc3339(self.viewed_at)}

    @property
    def at(self) -> datetime:
        return self.viewed_at


@dataclass(frozen=True, slots=True)
class StoryReacted(_StoryEvent):
    """`user_id` (not the author) reacted to `story_id` with `emoji`."""

    TYPE: ClassVar[str] = "story.reacted"

    user_id: UUID
    emoji: str
    created_at: datetime

    def client_payload(self) -> dict[str, str]:
        return {
            "story_id": str(self.story_id),
            "user_id": str(self.user_id),
            "emoji": self.emoji,
            "created_at": rfc3339(self.created_at),
        }

    @property
    def at(self) -> datetime:
        return self.created_at


Event: TypeAlias = StoryViewed | StoryReacted
