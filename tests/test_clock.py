from datetime import UTC, datetime, timedelta, timezone

from stories.clock import rfc3339


def test_rfc3339_is_utc_with_milliseconds_and_z():
    assert rfc3339(datetime(2026, 11, 24, 10, 0, 0, 123_999, tzinfo=UTC)) == "2026-11-24T10:00:00.123Z"
    assert rfc3339(datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)) == "2026-11-24T10:00:00.000Z"
    plus_two = timezone(timedelta(hours=2))
    assert rfc3339(datetime(2026, 11, 24, 12, 0, 0, 5_000, tzinfo=plus_two)) == "2026-11-24T10:00:00.005Z"


def test_rfc3339_remembers_instants_not_zones():
    # Memoized: the same instant in another zone is the same text, and a different instant never reuses one.
    plus_two = timezone(timedelta(hours=2))
    at = datetime(2026, 11, 24, 10, 0, 0, 5_000, tzinfo=UTC)
    assert rfc3339(at) == rfc3339(at.astimezone(plus_two)) == "2026-11-24T10:00:00.005Z"
    assert rfc3339(at + timedelta(milliseconds=1)) == "2026-11-24T10:00:00.006Z"
