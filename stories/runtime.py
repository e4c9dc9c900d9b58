"""The composition root: the only place that builds and wires the process (STYLE R8).

Shutdown order is the nesting below, outermost last to close: signal handling -> database (its asyncio loop
inside) -> Redis -> actors -> HTTP. The first SIGTERM/SIGINT stops accepting and drains requests (bounded by
DRAIN_SECONDS; during start-up it stops the start); then actors are cancelled, the pool closes and an embedded
database stops. A second signal cancels at once.
"""

from __future__ import annotations

import gc
import signal
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog
import trio

from stories.actors import ActorSpec, MetricsExporter, supervise
from stories.actors.access import AccessWatcher, build_access_watcher
from stories.actors.backlog import ReportBacklog
from stories.actors.counters import CounterFlusher
from stories.actors.expiry import ExpiryTicker
from stories.actors.hub import Hub
from stories.actors.ratelimit import BucketKeeper
from stories.actors.relay import EventRelay, build_relay
from stories.api import AppDeps, Probes, create_app, create_probe_app
from stories.api.authentication import Callers
from stories.api.json_shapes import story_fragment, story_head
from stories.api.server import serve_http
from stories.clock import Clock, SystemClock
from stories.dev_secret import resolve_jwt_secret
from stories.feed_cache import FeedCache, GraphVersions, LocalVersions, RedisVersions
from stories.media.link import StorageLink, open_storage
from stories.media.sweeper import MediaSweeper
from stories.metrics import Metrics
from stories.process_phase import Lifecycle
from stories.redis import open_redis
from stories.security import PasswordHasher, TokenIssuer
from stories.seed import DEFAULT_SEED_PASSWORD, SeedProgress, SeedSummary
from stories.seed import seed as seed_database
from stories.store import Database, Store, migrate, open_database
from stories.store.events import EventLog
from stories.store.sessions import SessionStore
from stories.store.uploads import Uploads
from stories.tray_cache import CLOCK_SLACK, LocalSeenLog, RedisSeenLog, SeenLog, TrayCache

if TYPE_CHECKING:
    import socket
    from collections.abc import AsyncIterator, Sequence
    from contextlib import AbstractAsyncContextManager

    from stories.redis import RedisLink
    from stories.settings import Settings

__all__ = ["run_migrations", "seed", "serve", "set_moderator", "worker"]

log = structlog.get_logger()


# Young-generation collections every 700 allocations (CPython's default) ran the collector thousands of times a
# second under load; bench/http.md has the measured share of CPU before and after.
GC_THRESHOLDS = (20_000, 20, 20)


async def watch_signals(
    life: Lifecycle, everything: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not life.shutdown.is_set():
                log.info("shutdown.requested", signal=name)
                life.shutdown.set()
                if not life.started:
                    everything.cancel(f"{name} during start-up")
            else:
                log.warning("shutdown.forced", signal=name)
                everything.cancel(f"second {name}")


@asynccontextmanager
async def signals_handled() -> AsyncIterator[Lifecycle]:
    """A block with SIGTERM/SIGINT handled from its first line, so a signal during a slow start is never lost."""
    life = Lifecycle()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, life, nursery.cancel_scope)
        yield life
        nursery.cancel_scope.cancel("stopped")


def tune_gc() -> None:
    """After start-up: everything allocated so far lives as long as the process, so move it out of the collector's
    sight (gc.freeze), and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def open_store_for(
    settings: Settings, pool_size: int | None = None, *, bounded: bool = True
) -> AbstractAsyncContextManager[Database]:
    """The database the settings name (or the embedded one), with this process's pool. `bounded`: every
    statement within DB_STATEMENT_TIMEOUT_SECONDS (all but a seed, which bulk-loads)."""
    return open_database(
        settings.database_url,
        data_dir=settings.data_dir,
        pool_size=pool_size or settings.db_pool_size,
        acquire_timeout=settings.db_acquire_timeout_seconds,
        statement_timeout=settings.db_statement_timeout_seconds if bounded else None,
        direct_url=settings.database_direct_url,
    )


def expiry_spec(
    settings: Settings, store: Store, clock: Clock, metrics: Metrics, media: StorageLink | None
) -> ActorSpec:
    sweeper = None
    if media is not None:
        sweeper = MediaSweeper(
            Uploads(store.database), media.storage, metrics, retry_seconds=settings.expiry_interval_seconds
        )
    ticker = ExpiryTicker(
        store,
        clock,
        metrics,
        interval=settings.expiry_interval_seconds,
        retention=timedelta(days=settings.retention_days),
        media=sweeper,
    )
    return ActorSpec("expiry", ticker.run)


def metrics_spec(metrics: Metrics, database: Database) -> ActorSpec:
    def sample_pool(m: Metrics) -> None:
        m.db_pool_size.set(database.pool_size)
        m.db_pool_idle.set(database.pool_idle)

    return ActorSpec("metrics", MetricsExporter(metrics, samplers=[sample_pool]).run)


def actor_specs(
    settings: Settings,
    store: Store,
    clock: Clock,
    metrics: Metrics,
    limiter: BucketKeeper,
    relay: EventRelay,
    counters: CounterFlusher,
    access: AccessWatcher,
    media: StorageLink | None = None,
) -> Sequence[ActorSpec]:
    return [
        metrics_spec(metrics, store.database),
        ActorSpec("ratelimit", limiter.run),
        ActorSpec("relay", relay.run),
        # Two actors: reading the change log must go on whatever the broker does (a poll bounds a lost push).
        ActorSpec("access", access.run),
        ActorSpec("access_push", access.listen),
        ActorSpec("counters", counters.run),
        ActorSpec("backlog", ReportBacklog(store, clock, metrics).run),
        *([ActorSpec("storage", media.run)] if media is not None else []),
        expiry_spec(settings, store, clock, metrics, media),
    ]


def feed_cache(settings: Settings, store: Store, redis: RedisLink | None, metrics: Metrics) -> FeedCache:
    """Versions through Redis when configured; else in this process, exact only when it is the only one."""
    ttl = settings.feed_cache_seconds
    versions: GraphVersions
    if redis is not None:
        versions = RedisVersions(redis)
    else:
        versions = LocalVersions(ttl)
        if settings.workers > 1:
            ttl = 0
            log.info("feed_cache.off", reason="several processes without Redis share no graph versions")
    return FeedCache(store, versions, metrics, ttl, present=story_fragment)


def tray_cache(feeds: FeedCache, store: Store, redis: RedisLink | None, metrics: Metrics) -> TrayCache:
    """The tray reads under the feed cache's versions and lifetime (off when it is), with the seen log next to
    them: in Redis when the versions are."""
    seen: SeenLog
    if redis is not None:
        seen = RedisSeenLog(redis, timedelta(seconds=feeds.ttl) + CLOCK_SLACK)
    else:
        seen = LocalSeenLog(feeds.ttl)
    return TrayCache(store, feeds.versions, seen, metrics, feeds.ttl, present=story_head)


def _jwt_secret(settings: Settings) -> str:
    secret, generated = resolve_jwt_secret(settings)
    if generated:
        log.warning(
            "jwt.dev_secret",
            message="JWT_SECRET is unset: using a generated secret kept in DATA_DIR; set it in production",
            path=str(settings.data_dir),
        )
    return secret


async def serve(
    settings: Settings,
    *,
    clock: Clock | None = None,
    held: socket.socket | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole service until a signal; reports the bound HTTP addresses once listening. `held`: the
    listening socket to serve on, taken before this started (stories.api.server.hold_port)."""
    clock = clock or SystemClock()
    secret = _jwt_secret(settings)
    metrics = Metrics()
    metrics.watch_gc()
    passwords = PasswordHasher(settings.bcrypt_cost)
    # The embedded object store before the database: it locks DATA_DIR, so a second `stories serve` on one
    # DATA_DIR stops there, before an embedded database starts for nothing.
    async with (
        signals_handled() as life,
        open_storage(settings) as media,
        open_store_for(settings) as database,
        open_redis(settings.redis_url) as redis,
    ):
        await migrate(database)
        await passwords.prepare()  # one hash: measures the hash time and builds the dummy for unknown emails
        store = Store(database)
        limiter = BucketKeeper.from_settings(settings, redis)
        hub = Hub(metrics)
        relay = build_relay(hub, database=database, redis=redis)
        counters = CounterFlusher(store)
        tokens = TokenIssuer(secret, settings.jwt_ttl_seconds, clock)
        feeds = feed_cache(settings, store, redis, metrics)
        callers = Callers(tokens, SessionStore(database))
        access = build_access_watcher(callers, hub, clock, database=database, redis=redis, settings=settings)
        # Before serving: no token of a session revoked earlier may get through this process.
        await access.load()
        async with trio.open_nursery() as actors:
            actors.start_soon(hub.close_all_on, life.shutdown)
            for spec in actor_specs(settings, store, clock, metrics, limiter, relay, counters, access, media):
                await actors.start(supervise, spec, metrics)
            app = create_app(
                AppDeps(
                    settings=settings,
                    store=store,
                    metrics=metrics,
                    clock=clock,
                    tokens=tokens,
                    passwords=passwords,
                    limiter=limiter,
                    redis=redis,
                    hub=hub,
                    relay=relay,
                    callers=callers,
                    counters=counters,
                    feeds=feeds,
                    trays=tray_cache(feeds, store, redis, metrics),
                    events=EventLog(database),
                    access=access,
                    media=media,
                    life=life,
                )
            )
            tune_gc()
            life.started = True
            await serve_http(app, settings, life.shutdown, held=held, task_status=task_status)
            actors.cancel_scope.cancel("http drained")
    log.info("shutdown.complete")


async def run_migrations(settings: Settings) -> None:
    async with signals_handled(), open_store_for(settings, pool_size=1) as database:
        await migrate(database)


async def set_moderator(settings: Settings, email: str, *, grant: bool) -> bool | None:
    """`stories admin grant|revoke`: migrate, then grant or revoke the role. None for an unknown email, else
    whether anything changed."""
    async with signals_handled(), open_store_for(settings, pool_size=1) as database:
        await migrate(database)
        return await Store(database).set_moderator(email, grant, SystemClock().now())


async def worker(
    settings: Settings,
    *,
    clock: Clock | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The expiry ticker alone (for deployments that run it apart; same code as in `serve`), with /healthz,
    /readyz and /metrics on PORT so that it can be probed and scraped. Reports the bound addresses."""
    clock = clock or SystemClock()
    metrics = Metrics()
    metrics.watch_gc()
    async with (
        signals_handled() as life,
        open_store_for(settings, pool_size=2) as database,
        # Only a store MINIO_* names: an embedded one here would be a store no server uploads to.
        open_storage(settings, embedded=False) as media,
    ):
        await migrate(database)
        store = Store(database)
        async with trio.open_nursery() as actors:
            specs = [metrics_spec(metrics, database), expiry_spec(settings, store, clock, metrics, media)]
            if media is not None:
                specs.append(ActorSpec("storage", media.run))  # keeps the /healthz storage check current
            for spec in specs:
                await actors.start(supervise, spec, metrics)
            probed = Probes(settings=settings, store=store, metrics=metrics, redis=None, life=life, media=media)
            app = create_probe_app(probed)
            life.started = True
            await serve_http(app, settings, life.shutdown, task_status=task_status)
            actors.cancel_scope.cancel("http drained")
    log.info("shutdown.complete")


async def seed(
    settings: Settings,
    *,
    users: int,
    stories: int,
    follows_per_user: int,
    tag: str,
    progress: SeedProgress | None = None,
) -> SeedSummary:
    """Migrate, then fill the database with generated data (see stories.seed); every password is
    DEFAULT_SEED_PASSWORD. `progress` hears of each phase."""
    if progress is not None:
        progress.phase("connecting to the database" if settings.database_url else "starting the embedded database")
    async with open_store_for(settings, pool_size=1, bounded=False) as database:
        if progress is not None:
            progress.phase("migrating")
        await migrate(database)
        if progress is not None:
            progress.phase("hashing the password")
        password_hash = await PasswordHasher(settings.bcrypt_cost).hash(DEFAULT_SEED_PASSWORD)
        return await seed_database(
            database,
            users=users,
            stories=stories,
            follows_per_user=follows_per_user,
            now=SystemClock().now(),
            password_hash=password_hash,
            story_ttl_seconds=settings.story_ttl_seconds,
            tag=tag,
            progress=progress,
        )
