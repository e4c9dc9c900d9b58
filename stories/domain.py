"""The service's facts, each in one place: the reactions allowed, how long things last and how far back reads
look, and the event ids of the realtime log (API.md "Stories", "Realtime", "Idempotency").

Pure values and parsing: no I/O, and no import of the service's other modules, so every layer may use it.
schema/0004_views_reactions.sql repeats the emoji list as a CHECK (a database keeps its own rules);
tests/test_domain.py checks that the two lists agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

__all__ = [
    "DEFAULT_RETENTION",
    "EMOJI_ALIASES",
    "IDEMPOTENCY_KEY_LIFETIME",
    "REACTION_EMOJIS",
    "REPLAY_WINDOW",
    "STATS_WINDOW",
    "UPLOAD_KEY_LIFETIME",
    "VIEWERS_WINDOW",
    "EventId",
    "MalformedEventId",
    "story_object_key",
]

# The reactions a story takes, in the order API.md lists them.
REACTION_EMOJIS = ("👍", "❤️", "😂", "😮", "😢", "🔥")
# Spellings clients send for an allowed emoji (a heart without its variation selector).
EMOJI_ALIASES = {"❤": "❤️"}

# An Idempotency-Key holds its response this long; after it, the key is free again (and purged).
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)
# An upload key may be attached to a story this long after it was issued.
UPLOAD_KEY_LIFETIME = timedelta(hours=24)


def story_object_key(story_id: UUID, media_key: str) -> str:
    """The key of a story's own copy of its upload (API.md "Media uploads": once a story uses an upload, its bytes
    cannot change). Upload URLs are only ever issued for `uploads/...` keys, so no client can write here."""
    return f"stories/{story_id}/{media_key.rsplit('/', 1)[-1]}"


# How far back an author's reads reach (API.md): their stats, a story's viewers, and the event log's replay (older
# events are gone: a client further behind is told to resync).
STATS_WINDOW = timedelta(days=7)
VIEWERS_WINDOW = timedelta(days=7)
REPLAY_WINDOW = timedelta(days=7)
# A deleted or expired story is kept this long (RETENTION_DAYS's default), then purged for good.
DEFAULT_RETENTION = timedelta(days=7)

_EVENT_ID = re.compile(r"^[0-9a-f]{32}$")
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
        if not _EVENT_ID.match(text):
            raise MalformedEventId("an event id is 32 lower-case hex digits, as the server sent it")
        seq = int(text[_HALF:], 16)
        if seq >= _SEQ_LIMIT:
            raise MalformedEventId("not an event id this server issued (out of range)")
        return cls(int(text[:_HALF], 16), seq)
