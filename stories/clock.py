"""Wall-clock time, injected. Actors measure intervals with trio's clock; instants stored in the
database (created_at, expires_at, JWT iat/exp) come from a `Clock`, so tests can move time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock", "rfc3339", "to_millis"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def to_millis(instant: datetime) -> datetime:
    """Truncate to whole milliseconds: the precision the API shows, so stored and shown times agree."""
    return instant.replace(microsecond=instant.microsecond - instant.microsecond % 1000)


def rfc3339(instant: datetime) -> str:
    """API.md's time format: UTC, milliseconds, `Z` suffix (2026-11-24T10:00:00.123Z).

    On the hot path (two per story of a feed page): isoformat is about twice as fast as strftime.
    """
    if instant.tzinfo is not UTC:
        instant = instant.astimezone(UTC)
    return instant.isoformat(timespec="milliseconds")[:-6] + "Z"
