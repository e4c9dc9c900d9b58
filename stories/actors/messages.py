"""Realtime events: frozen facts sent to a story's author (API.md "Realtime").

Each event has two encodings:
- `client_text()`: the WebSocket message of API.md, `{"type", "id", "payload"}`; the author id is not in it
  (the socket already belongs to the author).
- `relay_record()` / `event_from_relay()`: what travels between server processes; it adds `author_id`, so
  the receiving process knows whose sockets to deliver to, and keeps full timestamp precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeAlias
from uuid import UUID, uuid4

import orjson

from stories.clock import rfc3339

__all__ = ["Event", "MalformedEvent", "StoryReacted", "StoryViewed", "event_from_relay"]


class MalformedEvent(ValueError):
    """A relay record that is not a known event (another version, or garbage on the channel)."""


@dataclass(frozen=True, slots=True)
class StoryViewed:
    """Someone other than the author viewed `story_id` for the first time."""

    TYPE: ClassVar[str] = "story.viewed"

    author_id: UUID
    story_id: UUID
    viewer_id: UUID
    viewed_at: datetime
    id: UUID = field(default_factory=uuid4)

    def client_payload(self) -> dict[str, str]:
        return {"story_id": str(self.story_id), "viewer_id": str(self.viewer_id), "viewed_at": rfc3339(self.viewed_at)}

    def client_text(self) -> str:
        return _client_text(self.TYPE, self.id, self.client_payload())

    def relay_record(self) -> dict[str, str]:
        return {
            "type": self.TYPE,
            "id": str(self.id),
            "author_id": str(self.author_id),
            "story_id": str(self.story_id),
            "viewer_id": str(self.viewer_id),
            "viewed_at": self.viewed_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class StoryReacted:
    """`user_id` (not the author) reacted to `story_id` with `emoji`; `reaction_id` is the stored reaction."""

    TYPE: ClassVar[str] = "story.reacted"

    author_id: UUID
    story_id: UUID
    user_id: UUID
    emoji: str
    created_at: datetime
    reaction_id: UUID
    id: UUID = field(default_factory=uuid4)

    def client_payload(self) -> dict[str, str]:
        return {
            "story_id": str(self.story_id),
            "user_id": str(self.user_id),
            "emoji": self.emoji,
            "created_at": rfc3339(self.created_at),
        }

    def client_text(self) -> str:
        return _client_text(self.TYPE, self.id, self.client_payload())

    def relay_record(self) -> dict[str, str]:
        return {
            "type": self.TYPE,
            "id": str(self.id),
            "author_id": str(self.author_id),
            "story_id": str(self.story_id),
            "user_id": str(self.user_id),
            "emoji": self.emoji,
            "created_at": self.created_at.isoformat(),
            "reaction_id": str(self.reaction_id),
        }


Event: TypeAlias = StoryViewed | StoryReacted


def _client_text(kind: str, event_id: UUID, payload: dict[str, str]) -> str:
    return orjson.dumps({"type": kind, "id": str(event_id), "payload": payload}).decode("utf-8")


def event_from_relay(record: Any) -> Event:
    """The event a `relay_record()` describes; `MalformedEvent` for anything else."""
    if not isinstance(record, dict):
        raise MalformedEvent(f"a relay record is a JSON object, not {type(record).__name__}")
    try:
        kind = record["type"]
        if kind == StoryViewed.TYPE:
            return StoryViewed(
                author_id=UUID(record["author_id"]),
                story_id=UUID(record["story_id"]),
                viewer_id=UUID(record["viewer_id"]),
                viewed_at=_instant(record["viewed_at"]),
                id=UUID(record["id"]),
            )
        if kind == StoryReacted.TYPE:
            emoji = record["emoji"]
            if not isinstance(emoji, str):
                raise TypeError("emoji must be a string")
            return StoryReacted(
                author_id=UUID(record["author_id"]),
                story_id=UUID(record["story_id"]),
                user_id=UUID(record["user_id"]),
                emoji=emoji,
                created_at=_instant(record["created_at"]),
                reaction_id=UUID(record["reaction_id"]),
                id=UUID(record["id"]),
            )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedEvent(f"bad {record.get('type')!r} record: {exc!r}") from exc
    raise MalformedEvent(f"unknown event type {kind!r}")


def _instant(text: str) -> datetime:
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return instant
