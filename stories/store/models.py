"""Frozen records the store returns. Never asyncpg objects: callers stay on the trio side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from uuid import UUID


__all__ = [
    "AuditEntry",
    "Backlog",
    "Block",
    "FeedCursor",
    "Follow",
    "IdempotencyClaim",
    "ListedUser",
    "Migration",
    "Mute",
    "Position",
    "Profile",
    "Reaction",
    "Replay",
    "Report",
    "ReportCase",
    "Resolution",
    "Stats",
    "Story",
    "TrayStory",
    "User",
    "View",
    "Viewer",
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
    # The author's display name when the story was read (their only public identity; None: they set none).
    author_name: str | None = None


# What a claimed request creates (a Story, a Reaction, ...), which its stored response is rendered from.
Created = TypeVar("Created")


@dataclass(frozen=True, slots=True)
class IdempotencyClaim(Generic[Created]):
    """An Idempotency-Key to claim with what a request creates: the request's hash (include the route in it, so
    one key on two routes is a reuse), and how to render the response to replay later from what was created (a
    story holds the author's display name, read in the same transaction)."""

    key: str
    request_hash: bytes
    render: Callable[[Created], bytes]


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


@dataclass(frozen=True, slots=True)
class Position:
    """Keyset position in a list ordered newest first: (instant, id) of the last entry served."""

    at: datetime
    id: UUID


@dataclass(frozen=True, slots=True)
class Profile:
    """A user as GET /me and GET /users/{id} show them. `email` is only ever filled for the user themself;
    `followed_by_me` and `follows_me` are relative to the reader."""

    user_id: UUID
    display_name: str | None
    created_at: datetime
    followers: int
    following: int
    email: str | None = None
    followed_by_me: bool = False
    follows_me: bool = False


@dataclass(frozen=True, slots=True)
class ListedUser:
    """An entry of a user list (followers, following, blocks, mutes): who, and since when."""

    user_id: UUID
    display_name: str | None
    at: datetime

    @property
    def position(self) -> Position:
        return Position(self.at, self.user_id)


@dataclass(frozen=True, slots=True)
class Viewer:
    """An entry of a story's "seen by" list, with the viewer's reactions to it, oldest first."""

    user_id: UUID
    display_name: str | None
    viewed_at: datetime
    reactions: tuple[str, ...]

    @property
    def position(self) -> Position:
        return Position(self.viewed_at, self.user_id)


@dataclass(frozen=True, slots=True)
class Block:
    blocker_id: UUID
    blocked_id: UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Mute:
    muter_id: UUID
    muted_id: UUID
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Report:
    """A report as its reporter sees it: `status` is its case's (open until a moderator decides); `created` is
    False when the reporter had already reported this target (the existing report is returned); `hid_story`
    is True when this report held the story for review (the REPORT_HIDE_THRESHOLD-th reporter)."""

    id: UUID
    status: str
    created: bool
    hid_story: bool = False


@dataclass(frozen=True, slots=True)
class ReportCase:
    """An entry of GET /admin/reports: the reports of one target since the last decision, and the decision.
    `story` is the reported story as its author sees it (any state; None for a user target), `profile` the
    reported user (for a user target)."""

    id: UUID
    target_type: str
    target_id: UUID
    user_id: UUID
    reasons: dict[str, int]
    reporters: int
    opened_at: datetime
    resolved_at: datetime | None
    resolved_by: UUID | None
    action: str | None
    note: str | None
    story: Story | None = None
    profile: Profile | None = None
    suspended: bool = False

    @property
    def status(self) -> str:
        return "open" if self.resolved_at is None else "resolved"

    @property
    def position(self) -> Position:
        """Keyset position: open cases are listed oldest first, resolved ones latest decision first."""
        return Position(self.opened_at if self.resolved_at is None else self.resolved_at, self.id)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """A moderator's (or an operator's, actor None) action, as GET /admin/audit shows it."""

    id: UUID
    actor_id: UUID | None
    action: str
    target_type: str
    target_id: UUID
    note: str | None
    at: datetime

    @property
    def position(self) -> Position:
        return Position(self.at, self.id)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a resolve did: the case as it now stands, whether this call changed it (the same decision again
    changes nothing), and for the caches the stories that left every read (removed, or a suspended author's)."""

    case: ReportCase
    changed: bool
    hidden_story_ids: tuple[UUID, ...]


@dataclass(frozen=True, slots=True)
class Backlog:
    """Open cases (targets awaiting a decision) and when the oldest of them was opened (None: none is open)."""

    open: int
    oldest: datetime | None


@dataclass(frozen=True, slots=True)
class TrayStory:
    """A story of the reader's tray or of an author's stories, and when the reader viewed it (None: never)."""

    story: Story
    viewed_at: datetime | None
