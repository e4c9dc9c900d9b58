"""The composition root: the only place that builds and wires the process (STYLE R8).

Shutdown order is the nesting below, outermost last to close: asyncio loop -> store -> actors -> HTTP.
The first SIGTERM/SIGINT stops accepting and drains requests (bounded by DRAIN_SECONDS); then actors
are cancelled, the pool closes and an embedded database stops. A second signal cancels at once.
"""

from __future__ import annotations

import signal
from typing import TYPE_CHECKING

import structlog
import trio
import trio_asyncio

from stories.actors import ActorSpec, MetricsExporter, supervise
from stories.actors.expiry import ExpiryTicker
from stories.actors.hub import Hub
from stories.actors.ratelimit import BucketKeeper
from stories.actors.relay import EventRelay, build_relay, postgres_connector
from stories.api import AppDeps, create_app
from stories.api.server import serve_http
from stories.clock import Clock, SystemClock
from stories.metrics import Metrics
from stories.redis import open_redis
from stories.security import PasswordHasher, TokenIssuer
from stories.seed import DEFAULT_SEED_PASSWORD, SeedSummary
from stories.seed import seed as seed_database
from stories.settings import Settings, resolve_jwt_secret
from stories.store import Store, migrate, open_store

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["run_migrations", "seed", "serve", "worker"]

log = structlog.get_logger()


async def watch_signals(shutdown: trio.Event, actors: trio.CancelScope) -> None:
    """First SIGTERM/SIGINT: graceful shutdown. Second: cancel everything now."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.is_set():
                log.info("shutdown.requested", signal=name)
                shutdown.set()
            else:
                log.warning("shutdown.forced", signal=name)
                actors.cancel(f"second {name}")


def expiry_spec(settings: Settings, store: Store, clock: Clock, metrics: Metrics) -> ActorSpec:
    ticker = ExpiryTicker(store, clock, metrics, interval=settings.expiry_interval_seconds)
    return ActorSpec("expiry", ticker.run)


def actor_specs(
    settings: Settings, store: Store, clock: Clock, metrics: Metrics, limiter: BucketKeeper, relay: EventRelay
) -> Sequence[ActorSpec]:
    def sample_pool(m: Metrics) -> None:
        m.db_pool_size.set(store.pool_size)
        m.db_pool_idle.set(store.pool_idle)

    exporter = MetricsExporter(metrics, samplers=[sample_pool])
    return [
        ActorSpec("metrics", exporter.run),
        ActorSpec("ratelimit", limiter.run),
        ActorSpec("relay", relay.run),
        expiry_spec(settings, store, clock, metrics),
    ]


async def serve(
    settings: Settings,
    *,
    clock: Clock | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the whole service until a signal; reports the bound HTTP addresses once listening."""
    clock = clock or SystemClock()
    secret, generated = resolve_jwt_secret(settings)
    if generated:
        log.warning(
            "jwt.dev_secret",
            message="JWT_SECRET is unset: using a generated secret kept in DATA_DIR; set it in production",
            path=str(settings.data_dir),
        )
    shutdown = trio.Event()
    metrics = Metrics()
    async with (
        trio_asyncio.open_loop(),
        open_store(settings.database_url, data_dir=settings.data_dir, pool_size=settings.db_pool_size) as store,
        open_redis(settings.redis_url) as redis,
    ):
        await migrate(store)
        limiter = BucketKeeper.from_settings(settings, redis)
        hub = Hub(metrics)
        relay = build_relay(hub, connect=postgres_connector(store.dsn), redis=redis)
        async with trio.open_nursery() as actors:
            actors.start_soon(watch_signals, shutdown, actors.cancel_scope)
            actors.start_soon(hub.close_all_on, shutdown)
            for spec in actor_specs(settings, store, clock, metrics, limiter, relay):
                await actors.start(supervise, spec, metrics)
            app = create_app(
                AppDeps(
                    settings=settings,
                    store=store,
                    metrics=metrics,
                    clock=clock,
                    tokens=TokenIssuer(secret, settings.jwt_ttl_seconds, clock),
                    passwords=PasswordHasher(settings.bcrypt_cost),
                    limiter=limiter,
                    redis=redis,
                    hub=hub,
                    relay=relay,
                )
            )
            await serve_http(app, settings, shutdown, task_status=task_status)
            actors.cancel_scope.cancel("http drained")
    log.info("shutdown.complete")


async def run_migrations(settings: Settings) -> None:
    async with (
        trio_asyncio.open_loop(),
        open_store(settings.database_url, data_dir=settings.data_dir, pool_size=1) as store,
    ):
        await migrate(store)


async def worker(settings: Settings, *, clock: Clock | None = None) -> None:
    """The expiry ticker alone (for deployments that run it apart); same code as in `serve`."""
    clock = clock or SystemClock()
    metrics = Metrics()
    async with (
        trio_asyncio.open_loop(),
        open_store(settings.database_url, data_dir=settings.data_dir, pool_size=2) as store,
    ):
        await migrate(store)
        shutdown = trio.Event()
        async with trio.open_nursery() as actors:
            actors.start_soon(watch_signals, shutdown, actors.cancel_scope)
            await actors.start(supervise, expiry_spec(settings, store, clock, metrics), metrics)
            await shutdown.wait()
            actors.cancel_scope.cancel("shutdown")
    log.info("shutdown.complete")


async def seed(settings: Settings, *, users: int, stories: int, follows_per_user: int, tag: str) -> SeedSummary:
    """Migrate, then fill the database with generated data (see stories.seed); every password is
    DEFAULT_SEED_PASSWORD."""
    async with (
        trio_asyncio.open_loop(),
        open_store(settings.database_url, data_dir=settings.data_dir, pool_size=1) as store,
    ):
        await migrate(store)
        password_hash = await PasswordHasher(settings.bcrypt_cost).hash(DEFAULT_SEED_PASSWORD)
        return await seed_database(
            store,
            users=users,
            stories=stories,
            follows_per_user=follows_per_user,
            now=SystemClock().now(),
            password_hash=password_hash,
            story_ttl_seconds=settings.story_ttl_seconds,
            tag=tag,
        )
