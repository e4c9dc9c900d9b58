"""Shared fixtures: settings, clock, real PostgreSQL store, the app and its test client."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import structlog
import trio

from stories.actors.access import AccessWatcher, build_access_watcher
from stories.actors.counters import CounterFlusher
from stories.actors.hub import Hub
from stories.actors.ratelimit import BucketKeeper
from stories.actors.relay import EventRelay, build_relay
from stories.api import AppDeps, StoriesApp, create_app
from stories.api.authentication import Callers
from stories.api.json_shapes import story_fragment, story_head
from stories.clock import FixedClock
from stories.feed_cache import FeedCache, LocalVersions
from stories.logging import configure_logging
from stories.metrics import Metrics
from stories.security import PasswordHasher, TokenIssuer
from stories.settings import Settings
from stories.store import Store, open_database
from stories.store.bridge import Bridge, open_bridge
from stories.store.events import EventLog
from stories.store.sessions import SessionStore
from stories.tray_cache import LocalSeenLog, TrayCache

if TYPE_CHECKING:
    from tests.fixtures.pgbouncer import AppDatabase

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.pgbouncer",
    "tests.fixtures.redis",
    "tests.fixtures.storage",
]

TEST_JWT_SECRET = "test-secret-0123456789abcdef-0123456789"
START = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    configure_logging("warning")


@pytest.fixture
def settings(tmp_path: Path, app_database: AppDatabase) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        database_url=app_database.url,
        database_direct_url=app_database.direct_url,
        data_dir=tmp_path,
        jwt_secret=TEST_JWT_SECRET,
        bcrypt_cost=4,
        environment="test",
        db_pool_size=4,
    )


@pytest.fixture
def log_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """The JSON log lines written while the test runs, at info (the real processors and renderer, into a buffer)."""
    buffer = io.BytesIO()
    previous = structlog.get_config()
    configure_logging("info", stream=buffer)
    try:
        yield lambda: [orjson.loads(line) for line in buffer.getvalue().splitlines()]
    finally:
        structlog.configure(**previous)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def bridge() -> AsyncIterator[Bridge]:
    async with open_bridge() as bridge:
        yield bridge


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    async with open_database(
        settings.database_url, data_dir=settings.data_dir, pool_size=4, direct_url=settings.database_direct_url
    ) as database:
        yield Store(database)


@pytest.fixture
def hub(metrics: Metrics) -> Hub:
    return Hub(metrics)


@pytest.fixture
def counters(store: Store) -> CounterFlusher:
    return CounterFlusher(store)


@pytest.fixture
def app_deps(
    settings: Settings, store: Store, metrics: Metrics, clock: FixedClock, hub: Hub, counters: CounterFlusher
) -> AppDeps:
    tokens = TokenIssuer(TEST_JWT_SECRET, settings.jwt_ttl_seconds, clock)
    feeds = FeedCache(
        store, LocalVersions(settings.feed_cache_seconds), metrics, settings.feed_cache_seconds, present=story_fragment
    )
    callers = Callers(tokens, SessionStore(store.database))
    return AppDeps(
        settings=settings,
        store=store,
        metrics=metrics,
        clock=clock,
        tokens=tokens,
        passwords=PasswordHasher(settings.bcrypt_cost),
        limiter=BucketKeeper.from_settings(settings, None),
        redis=None,
        hub=hub,
        # Not running: a test that wants events delivered to sockets asks for `live_relay`.
        relay=build_relay(hub, database=store.database, redis=None),
        callers=callers,
        # Not running: tests flush it when they read counters.
        counters=counters,
        feeds=feeds,
        trays=TrayCache(
            store,
            feeds.versions,
            LocalSeenLog(settings.feed_cache_seconds),
            metrics,
            settings.feed_cache_seconds,
            present=story_head,
        ),
        events=EventLog(store.database),
        # Not running: a test that needs other processes' revocations read asks for `live_access`.
        access=build_access_watcher(callers, hub, clock, database=store.database, redis=None, settings=settings),
    )


@pytest.fixture
def app(app_deps: AppDeps) -> StoriesApp:
    return create_app(app_deps)


@pytest.fixture
def client(app: StoriesApp):
    return app.test_client()


@pytest.fixture
async def live_relay(app_deps: AppDeps, nursery) -> EventRelay:
    """The app's relay, running: events reach the hub's mailboxes."""
    nursery.start_soon(app_deps.relay.run)
    with trio.fail_after(10):
        await app_deps.relay.wait_listening()
    return app_deps.relay


@pytest.fixture
async def live_access(app_deps: AppDeps, nursery) -> AccessWatcher:
    """The app's access watcher, running: the change log is read, and hints sent and heard."""
    await nursery.start(app_deps.access.run)
    await nursery.start(app_deps.access.listen)
    return app_deps.access


@pytest.fixture(params=["postgres", "redis"])
def relay_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment of a `stories serve` process that selects the relay's broker: none (PostgreSQL's
    LISTEN/NOTIFY) or REDIS_URL (Redis pub/sub). The tests that take it run once with each."""
    if request.param == "postgres":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_url")}
