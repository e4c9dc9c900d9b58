"""`stories serve --workers N`: N server processes on one port, each a full actor system, under a small parent.

The parent resolves what the children must share (the embedded database and object store, started once here;
the port, reserved here so that PORT=0 gives one port for all), then runs each child as
`python -m stories serve --child` and:
- restarts a child that exits unasked, with the actors' jittered backoff (a child that fails its configuration
  stops everything instead: restarting it would only fail again);
- forwards SIGTERM/SIGINT to every child and exits 0 once all have drained; a second signal kills them.
The children bind the port with SO_REUSEPORT, so the kernel spreads connections evenly across them. Everything
they share beyond that already goes through PostgreSQL or Redis, exactly as N machines would (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import TYPE_CHECKING

import structlog
import trio

from stories.api.server import bind_error
from stories.backoff import Backoff
from stories.errors import ConfigError
from stories.media.embedded import EmbeddedSeaweedFS, find_weed
from stories.runtime import signals_handled
from stories.store.embedded import EmbeddedPostgres

if TYPE_CHECKING:
    from stories.media.storage import StorageConfig
    from stories.process_phase import Lifecycle
    from stories.settings import Settings

__all__ = ["serve_workers"]

log = structlog.get_logger()

# The exit code of a child whose configuration is invalid (stories.cli.EXIT_CONFIG).
CHILD_EXIT_CONFIG = 2
# Past DRAIN_SECONDS, how long a child may take to close its pools and stop before it is killed.
CHILD_STOP_GRACE_SECONDS = 10.0


def reserve_port(settings: Settings) -> socket.socket:
    """A socket bound (never listening) to HOST:PORT with SO_REUSEPORT: it fixes the port for every child and
    keeps it ours while a child restarts, and the kernel never hands it a connection.

    A socket with SO_REUSEPORT shares the port with any other of this user's that sets it too (another
    `--workers` parent's reservation, its children), so a plain bind tries the port first: it fails on a port
    that any other process holds. Raises ConfigError naming PORT or HOST."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections of a previous run don't count
            probe.bind((settings.host, settings.port))
            port = probe.getsockname()[1]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, port))
    except OSError as exc:
        sock.close()
        raise (bind_error(exc, settings) or ConfigError("PORT", f"{settings.port} cannot be bound")) from exc
    return sock


async def serve_workers(
    settings: Settings, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run `settings.workers` children until a signal; returns once all have exited. Reports the address the
    children serve once they are started."""
    embedded = None
    database_url = settings.database_url
    async with signals_handled() as life:
        # The port before the embedded database: a port in use stops the start before anything slow runs.
        with reserve_port(settings) as reserved:
            if database_url is None:
                embedded = EmbeddedPostgres(settings.data_dir)
                database_url = await trio.to_thread.run_sync(embedded.start)
            try:
                port = reserved.getsockname()[1]
                host = f"[{settings.host}]" if ":" in settings.host else settings.host
                async with trio.open_nursery() as storage:
                    # One embedded object store for all children, like the database.
                    storage_env = await _embedded_storage(settings, storage)
                    log.info("http.listening", binds=[f"http://{host}:{port}"], workers=settings.workers)
                    env = {
                        **os.environ,
                        **storage_env,
                        "DATABASE_URL": database_url,
                        "PORT": str(port),
                        "WORKERS": str(settings.workers),
                    }
                    life.started = True
                    async with trio.open_nursery() as children:
                        for index in range(settings.workers):
                            children.start_soon(_supervise_child, index, env, life, settings.drain_seconds)
                        task_status.started([f"http://{host}:{port}"])
                    storage.cancel_scope.cancel("workers stopped")
            finally:
                if embedded is not None:
                    with trio.move_on_after(CHILD_STOP_GRACE_SECONDS, shield=True):
                        await trio.to_thread.run_sync(embedded.stop)
    log.info("shutdown.complete", workers=settings.workers)


async def _embedded_storage(settings: Settings, nursery: trio.Nursery) -> dict[str, str]:
    """Start the embedded object store when the children would each start one (no MINIO_*); the MINIO_*
    variables that point them at it."""
    executable = find_weed()
    if settings.minio_endpoint is not None or executable is None:
        return {}
    config: StorageConfig = await nursery.start(EmbeddedSeaweedFS.for_settings(settings, executable).run)
    return {
        "MINIO_ENDPOINT": config.endpoint,
        "MINIO_ACCESS_KEY": config.access_key,
        "MINIO_SECRET_KEY": config.secret_key,
        "MINIO_BUCKET": config.bucket,
        "MINIO_REGION": config.region,
        "MINIO_USE_SSL": "false",
    }


async def _supervise_child(index: int, env: dict[str, str], life: Lifecycle, drain_seconds: float) -> None:
    backoff = Backoff()
    while not life.shutdown.is_set():
        started = trio.current_time()
        code = await _run_child(index, env, life, drain_seconds)
        if life.shutdown.is_set():
            return
        if code == CHILD_EXIT_CONFIG:
            raise ConfigError("WORKERS", f"worker {index} refused its configuration (exit {code}); see its log")
        delay = backoff.delay_after(trio.current_time() - started)
        log.error("worker.crashed", worker=index, exit_code=code, restart_in=round(delay, 3))
        with trio.move_on_after(delay):
            await life.shutdown.wait()


async def _run_child(index: int, env: dict[str, str], life: Lifecycle, drain_seconds: float) -> int:
    """One incarnation; its stdout and stderr are ours. Returns its exit code."""
    command = [sys.executable, "-m", "stories", "serve", "--child"]
    # A session of its own: a Ctrl-C in a terminal reaches the parent alone, which forwards one SIGTERM (the
    # child would otherwise get both, and take the second for "stop now").
    process = await trio.lowlevel.open_process(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    log.info("worker.started", worker=index, pid=process.pid)
    try:
        async with trio.open_nursery() as nursery:

            async def forward_shutdown() -> None:
                await life.shutdown.wait()
                process.send_signal(signal.SIGTERM)
                await trio.sleep(drain_seconds + CHILD_STOP_GRACE_SECONDS)
                log.warning("worker.kill", worker=index, reason="did not stop in time")
                process.kill()

            nursery.start_soon(forward_shutdown)
            code = await process.wait()
            nursery.cancel_scope.cancel("child exited")
    finally:
        if process.returncode is None:
            process.kill()  # cancelled (a second signal): never leave an orphan serving
    return code
