"""Realtime events: frozen facts sent to a story's author (API.md "Realtime").

Every event is a stored row (a first view or a reaction, schema/0010_story_events.sql) and its id is the row's
place in the event log, `EventId(xid, seq)`: ids order an author's events, and a row that commits late never
lands behind an id already served (stories/store/events.py says why). `client_text()` is the WebSocket message
of API.md, `{"type", "id", "payload"}`; the author id is not in it (the socket already belongs to the author).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias

import orjson

from stories.clock import rfc3339

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

__all__ = ["RESYNC_TEXT", "Event", "EventId", "MalformedEventId", "StoryReacted", "StoryViewed"]

# Tells a client that events it missed are gone from the log (older than 7 days, or more than the replay
# limit): it refetches what it shows instead.
RESYNC_TEXT = orjson.dumps({"type": "resync"}).decode("utf-8")

_ID = re.compile(r"^[0-9a-f]{32}$")
_HALF = 16
# The halves' real ranges: the xid is an xid8 (unsigned 64 bits, any 16 hex digits), the sequence number a
# bigint (signed 64 bits, never negative). A larger sequence number would overflow the query: a 400, not a 500.
_SEQ_LIMIT = 2**63


class MalformedEventId(ValueError):
    """An `after` that is not an event id this service issued."""


@dataclass(frozen=True, slots=True, order=True)
class EventId:
    """A place in the event log: the writing transaction's id (xid8), then a sequence number within it.

    Its text is 32 lower-case hex digits, so comparing the strings orders events as comparing the ids does.
    """

    xid: int
    seq: int

    def __str__(self) -> str:
        return f"{self.xid:016x}{self.seq:016x}"

    @classmethod
    def parse(cls, text: str) -> EventId:
        if not _ID.match(text):
            raise MalformedEventId("an event id is 32 lower-case hex digits, as the server sent it")
        seq = int(text[_HALF:], 16)
        if seq >= _SEQ_LIMIT:
            raise MalformedEventId("not an event id this server issued (out of range)")
        return cls(int(text[:_HALF], 16), seq)


@dataclass(frozen=True, slots=True)
class StoryViewed:
    """Someone other than the author viewed `story_id` for the first time."""

    TYPE: ClassVar[str] = "story.viewed"

    id: EventId
    author_id: UUID
    story_id: UUID
    viewer_id: UUID
    viewed_at: datetime

    def client_payload(self) -> dict[str, str]:
        return {"story_id": str(self.story_id), "viewer_id": str(self.viewer_id), "viewed_at": rfc3339(self.viewed_at)}

    @property
    def at(self) -> datetime:
        return self.viewed_at

    def client_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": str(self.id), "payload": self.client_payload()}

    def client_text(self) -> str:
        return orjson.dumps(self.client_json()).decode("utf-8")


@dataclass(frozen=True, slots=True)
class StoryReacted:
    """`user_id` (not the author) reacted to `story_id` with `emoji`."""

    TYPE: ClassVar[str] = "story.reacted"

    id: EventId
    author_id: UUID
    story_id: UUID
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

    def client_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": str(self.id), "payload": self.client_payload()}

    def client_text(self) -> str:
        return orjson.dumps(self.client_json()).decode("utf-8")


Event: TypeAlias = StoryViewed | StoryReacted
