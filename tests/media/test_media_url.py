"""How long a story's media URL lives (API.md: a presigned GET valid MEDIA_URL_SECONDS, never past the story's end),
and that reads within one window still get the same URL. ObjectStorage.media_url makes no call to the store, so
most of these sign with a FixedClock; the last one asks the session's SeaweedFS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from stories.clock import FixedClock, SystemClock
from stories.media.storage import MEDIA_URL_WINDOW_SECONDS, ObjectStorage, StorageConfig, open_object_storage
from tests.conftest import START

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

CONFIG = StorageConfig(
    endpoint="http://127.0.0.1:9000", bucket="stories", access_key="key", secret_key="secret", region="us-east-1"
)
KEY = "stories/00000000-0000-0000-0000-000000000001/media.jpg"
A_DAY = timedelta(days=1)


@pytest.fixture
async def storage() -> AsyncIterator[ObjectStorage]:
    async with httpx.AsyncClient(trust_env=False) as client:  # never used: media_url makes no call
        yield ObjectStorage(CONFIG, client, FixedClock(START))


def signed(url: str) -> tuple[datetime, int]:
    """The URL's X-Amz-Date and X-Amz-Expires."""
    query = parse_qs(urlsplit(url).query)
    date = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return date, int(query["X-Amz-Expires"][0])


def at(storage: ObjectStorage, instant: datetime) -> None:
    storage.clock = FixedClock(instant)


# Instants across (and past) a window of MEDIA_URL_WINDOW_SECONDS: its start, fractions of a second, its end.
OFFSETS = [0.0, 0.25, 1.0, 7.5, 29.999, 30.0, 45.5, 59.0, 59.999, 60.0, 61.5, 119.75, 3599.5]


@pytest.mark.parametrize("seconds", [900, 3600, 300, 100, 30, 15, 14, 3, 1])
@pytest.mark.parametrize("offset", OFFSETS)
async def test_a_media_url_is_valid_the_configured_time_and_never_longer(storage, seconds, offset):
    now = START + timedelta(seconds=offset)
    at(storage, now)
    date, expires = signed(storage.media_url(KEY, seconds, A_DAY))
    # The client sees the configured lifetime, and the URL dies no later than `seconds` from the read ...
    assert expires == seconds
    assert date <= now
    assert date + timedelta(seconds=expires) <= now + timedelta(seconds=seconds)
    # ... yet it is valid for nearly all of it: more than 14/15 of it (more than `seconds - 1` below 15 s, as
    # AWS dates have whole seconds).
    left = date + timedelta(seconds=expires) - now
    assert left > timedelta(seconds=min(seconds * 14 / 15, seconds - 1))


@pytest.mark.parametrize("offset", OFFSETS)
async def test_a_small_media_url_seconds_gives_a_url_that_short(storage, offset):
    now = START + timedelta(seconds=offset)
    at(storage, now)
    date, expires = signed(storage.media_url(KEY, 3, A_DAY))
    assert expires == 3
    assert now - timedelta(seconds=1) < date <= now


@pytest.mark.parametrize("offset", OFFSETS)
async def test_a_media_url_never_outlives_its_story(storage, offset):
    now = START + timedelta(seconds=offset)
    at(storage, now)
    ends = now + timedelta(seconds=100.5)
    date, expires = signed(storage.media_url(KEY, 900, ends - now))
    assert expires <= 900
    assert date + timedelta(seconds=expires) <= ends


async def test_reads_within_one_window_get_the_same_url(storage):
    # START is a whole minute: with the default 900 s, one window is that minute.
    assert MEDIA_URL_WINDOW_SECONDS == 60
    story_ends = START + timedelta(hours=23)
    urls = []
    for offset in (0.0, 0.5, 1.0, 30.0, 59.999):
        at(storage, START + timedelta(seconds=offset))
        urls.append(storage.media_url(KEY, 900, story_ends - storage.clock.now()))
    assert len(set(urls)) == 1
    # A story that ends sooner than MEDIA_URL_SECONDS: the same URL too (it ends at the story's end).
    story_ends = START + timedelta(seconds=600.25)
    short = set()
    for offset in (0.0, 12.0, 59.5):
        at(storage, START + timedelta(seconds=offset))
        short.add(storage.media_url(KEY, 900, story_ends - storage.clock.now()))
    assert len(short) == 1
    # The next window gives a new URL, signed at its start.
    at(storage, START + timedelta(seconds=60))
    later = storage.media_url(KEY, 900, A_DAY)
    assert later not in urls
    assert signed(later) == (START + timedelta(seconds=60), 900)


@pytest.mark.parametrize(("seconds", "window"), [(900, 60), (3600, 60), (300, 20), (30, 2), (15, 1), (3, 1)])
async def test_the_window_scales_with_the_lifetime(storage, seconds, window):
    base = START + timedelta(seconds=3600)  # a multiple of every window here
    at(storage, base)
    first = storage.media_url(KEY, seconds, A_DAY)
    at(storage, base + timedelta(seconds=window - 0.001))
    assert storage.media_url(KEY, seconds, A_DAY) == first
    at(storage, base + timedelta(seconds=window))
    assert storage.media_url(KEY, seconds, A_DAY) != first


async def test_the_store_refuses_a_media_url_after_its_lifetime(storage_config, http):
    """End to end: a URL read `seconds` + 2 s ago (signed by a clock set that far back: the store checks against
    its own, the real one) is refused. No waiting: the real clock only moves on, which makes it older still."""
    key = f"uploads/{uuid.uuid4()}/late.jpg"
    body = b"\xff\xd8\xff\xe0" + b"late" + b"\xff\xd9"
    async with open_object_storage(storage_config) as storage:
        url = storage.presign_put(key, "image/jpeg", len(body))
        put = await http.put(url, content=body, headers={"Content-Type": "image/jpeg"})
        assert put.status_code == 200, put.text
        # The control: a URL read now works.
        assert (await http.get(storage.media_url(key, 900, A_DAY))).content == body
        # A lifetime chosen so the read fell just after a minute's start: a URL signed at that minute and valid a
        # minute longer than promised (as once) would still work for about a minute.
        real = SystemClock().now()
        seconds = (int(real.timestamp()) - 2) % 60 or 60
        storage.clock = FixedClock(real - timedelta(seconds=seconds + 2))
        url = storage.media_url(key, seconds, A_DAY)
    response = await http.get(url)
    assert response.status_code == 403, response.text
    assert "expired" in response.text.lower()
