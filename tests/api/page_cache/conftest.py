"""What the page cache tests (test_feed_cache.py, test_tray_cache.py) share: ten-minute stories, and the count of
the store queries a cache saves."""

from __future__ import annotations

import dataclasses

import pytest

from stories.api import AppDeps
from stories.settings import Settings
from tests.helpers import CountingStore


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Ten minutes, so that a test walks its pages and moves its clock well inside a story's life.
    return dataclasses.replace(settings, story_ttl_seconds=600)


@pytest.fixture
def counting(request: pytest.FixtureRequest, app_deps: AppDeps, monkeypatch: pytest.MonkeyPatch) -> CountingStore:
    """The calls the app's own page cache named by the test module's `CACHE` ("feed" or "tray") makes to the
    store's query of that name: what a hit saves. The app's caches are on (FEED_CACHE_SECONDS=30, the default)."""
    assert app_deps.settings.feed_cache_seconds == 30
    query = request.module.CACHE
    counting = CountingStore(app_deps.store, query)
    # The caches look the query up on their store at each call, so they now call the counted one.
    monkeypatch.setattr(app_deps.store, query, getattr(counting, query))
    return counting
