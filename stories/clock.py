"""Wall-clock time, injected. Actors measure intervals with trio's clock; instants stored in the
database (created_at, expires_at, JWT iat/exp) come from a `Clock`, so tests can move time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol

__all__ = ["Clock", "FixedClock", "SystemClock", "rfc3339", "to_millis"]

# Instants whose text `rfc3339` keeps (~200 bytes each: about 1.6 MiB): a story's two times are rendered again for
# every reader whose page is not cached, and formatting one costs ~10x looking it up (a tray miss spent 13 % of
# its CPU formatting before).
RFC3339_MEMO_SIZE = 8192


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


@lru_cache(maxsize=RFC3339_MEMO_SIZE)
def rfc3339(instant: datetime) -> str:
    """API.md's time format: UTC, milliseconds, `Z` suffix (2026-11-24T10:00:00.123Z).

    On the hot path (two per story of a feed page): isoformat is about twice as fast as strftime, and a
    remembered instant is faster still. Memoizing is exact: aware datetimes are equal (and hash alike) when they
    are the same instant, whatever their zones, and the text depends on the instant only; a naive one never equals
    an aware one.
    """
    if instant.tzinfo is not UTC:
        instant = instant.astimezone(UTC)
    return instant.isoformat(timespec="milliseconds")[:-6] + "Z"
