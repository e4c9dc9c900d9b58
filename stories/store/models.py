"""Frozen records the store returns. Never asyncpg objects: callers stay on the trio side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

__all__ = [
    "FeedCursor",
    "Follow",
    "IdempotencyClaim",
    "Migration",
    "Reaction",
    "Replay",
    "Stats",
    "Story",
    "User",
    "View",
]


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    email: str
    password_hash: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@dataclass(frozen=True, slots=True)
class Story:
    id: UUID
    author_id: UUID
    text: str | None
    media_key: str | None
    visibility: str
    created_at: datetime
    expires_at: datetime
    view_count: int = 0
    reaction_count: int = 0


@dataclass(frozen=True, slots=True)
class IdempotencyClaim:
    """An Idempotency-Key to claim with a story: the request's hash and the response to replay later."""

    key: str
    request_hash: bytes
    response: bytes


@dataclass(frozen=True, slots=True)
class Replay:
    """The stored response of an earlier request with the same key and body."""

    response: bytes


@dataclass(frozen=True, slots=True)
class View:
    story_id: UUID
    author_id: UUID
    viewer_id: UUID
    viewed_at: datetime
    first_view: bool


@dataclass(frozen=True, slots=True)
class Reaction:
    id: UUID
    story_id: UUID
    author_id: UUID
    user_id: UUID
    emoji: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Follow:
    follower_id: UUID
    followee_id: UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Stats:
    posted: int
    views: int
    unique_viewers: int
    reactions: dict[str, int]


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Position after the last story of a page: (created_at, id) of that story, newest-first order."""

    created_at: datetime
    id: UUID
