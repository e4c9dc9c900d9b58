"""serve_http(): hypercorn's trio worker serving the app until shutdown, restarted if it dies early."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import structlog
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from stories.actors.supervisor import Backoff
from stories.api.ws import configure_keepalive

if TYPE_CHECKING:
    from stories.api.deps import StoriesApp
    from stories.settings import Settings

__all__ = ["serve_http"]

log = structlog.get_logger()


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.graceful_timeout = settings.drain_seconds
    config.accesslog = None  # the app logs one structured line per request itself
    config.errorlog = None
    # Bodies are capped by the app (MAX_CONTENT_LENGTH, with API.md's 413 body); this bounds the rest.
    config.h11_max_incomplete_size = 64 * 1024
    configure_keepalive(
        config, ping_interval=settings.ws_ping_interval_seconds, dead_after=settings.ws_dead_after_seconds
    )
    return config


async def serve_http(
    app: StoriesApp,
    settings: Settings,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set, then drain in-flight requests for at most DRAIN_SECONDS.

    Reports the bound addresses once listening. A failure before that (a port in use) propagates, so the
    boot fails; a server that stops later while no shutdown was asked for is restarted with backoff.
    """
    config = hypercorn_config(settings)
    backoff = Backoff()
    started = False
    while True:
        try:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
                log.info("http.listening", binds=binds)
                if not started:
                    started = True
                    task_status.started(binds)
        except Exception as exc:
            if not started:
                raise
            log.error("http.crashed", error=repr(exc), exc_info=exc)
        if shutdown.is_set():
            log.info("http.drained")
            return
        delay = backoff.next_delay()
        log.warning("http.restarting", restart_in=round(delay, 3))
        await trio.sleep(delay)
