"""serve_http(): hypercorn's trio worker serving the app until shutdown, restarted if it dies early.

Shutdown (STYLE R8, step 1). When `shutdown` is set, hypercorn closes its listeners; from then on every HTTP/1
response says `Connection: close` (protocol_errors.py), so no client is left holding a keep-alive connection that
will never answer again. A request that reached us is answered: idle keep-alive connections stay open until
nothing is in flight, and are then closed only if no byte of a next request has arrived (idle_connections.py).
The drain ends then (or after DRAIN_SECONDS): hypercorn's own graceful wait cannot end it, because it also waits
for WebSocket connections the app has already closed (see `serve_http`).
"""

from __future__ import annotations

import errno
import socket
import warnings
from functools import partial
from typing import TYPE_CHECKING

import structlog
import trio
from hypercorn.trio import serve

from stories.api import idle_connections, protocol_errors
from stories.api.idle_connections import Connections, DrainConfig
from stories.api.ws import configure_websockets
from stories.backoff import Backoff
from stories.errors import ConfigError

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, ASGISendEvent, Scope

    from stories.api.probe_deps import ProbedApp
    from stories.settings import Settings

__all__ = ["CLOSE_SECONDS", "DRAIN_SETTLE_SECONDS", "Drain", "bind_error", "hold_port", "serve_http"]

log = structlog.get_logger()

# How long nothing must be in flight before the drain closes idle connections: covers a request hypercorn has
# read but not yet handed to the app (a few scheduler ticks). Also how often the drain looks again at
# connections still receiving a request.
DRAIN_SETTLE_SECONDS = 0.05
# Bounds the shielded last send of a response while draining (see `Drain`).
CLOSE_SECONDS = 1.0


class Drain:
    """ASGI middleware between hypercorn and the app: counts what is in flight and, once `shutdown` is set,
    lets the last send of every HTTP/1 response complete (see `_send_shielded_when_draining`).

    In flight: an HTTP request until the app has sent its whole response; a WebSocket session until the app
    has closed it (the hub closes every socket with 1001 on shutdown), so its close frame is out before the
    drain ends. `wait_drained()` blocks until nothing is. Owns no tasks; cancelling a wait is safe.
    """

    def __init__(self, app: ASGIFramework, shutdown: trio.Event) -> None:
        self._app = app
        self._shutdown = shutdown
        self._in_flight = 0
        self._changed = trio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "lifespan":
            await self._app(scope, receive, send)
            return
        app_send = send
        # Only HTTP/1 connections are closed by the response (HTTP/2 forbids the Connection header).
        if scope["type"] == "http" and scope["http_version"].startswith("1."):
            app_send = partial(self._send_shielded_when_draining, send)
        self._set_in_flight(self._in_flight + 1)
        try:
            await self._app(scope, receive, app_send)
        finally:
            self._set_in_flight(self._in_flight - 1)

    def _set_in_flight(self, count: int) -> None:
        self._in_flight = count
        # Only a drain waits on changes (wait_drained), so only a drain pays for the events (the hot path).
        if self._shutdown.is_set():
            self._changed.set()
            self._changed = trio.Event()

    async def _send_shielded_when_draining(self, send: ASGISendCallable, message: ASGISendEvent) -> None:
        if not self._shutdown.is_set():
            await send(message)
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            # Cleanup, hence the shield: hypercorn closes the connection inside this call, from the app's task,
            # which quart-trio cancels as soon as hypercorn reports the request done. Unshielded, the close is
            # lost and a client that sends another request on the connection waits for the drain's end.
            with trio.move_on_after(CLOSE_SECONDS, shield=True):
                await send(message)
        else:
            await send(message)

    async def wait_drained(self) -> None:
        """Return once nothing has been in flight for DRAIN_SETTLE_SECONDS."""
        while True:
            while self._in_flight:
                await self._changed.wait()
            with trio.move_on_after(DRAIN_SETTLE_SECONDS) as settle:
                await self._changed.wait()
            if settle.cancelled_caught:
                return


def hypercorn_config(settings: Settings) -> DrainConfig:
    protocol_errors.install()
    idle_connections.install()
    config = DrainConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    if settings.workers > 1:
        # With several server processes (stories serve --workers N) each binds the port with SO_REUSEPORT, which
        # hypercorn sets when told of more than one worker, and the kernel spreads connections across them. Its
        # trio `serve` then warns that it starts no workers itself: true, and meant (stories.workers does).
        config.workers = settings.workers
        warnings.filterwarnings("ignore", message="The config `workers` has no affect", category=Warning)
    # A backstop only: serve_http ends the drain itself, by the same deadline.
    config.graceful_timeout = settings.drain_seconds
    config.accesslog = None  # the app logs one structured line per request itself
    config.errorlog = None
    # Bodies are capped by the app (MAX_CONTENT_LENGTH, with API.md's 413 body); this bounds the rest.
    config.h11_max_incomplete_size = 64 * 1024
    configure_websockets(
        config, ping_interval=settings.ws_ping_interval_seconds, dead_after=settings.ws_dead_after_seconds
    )
    # Idle HTTP/1.1 connections close after this (protocol_errors.py makes hypercorn's timer run at all); the
    # read timeout above stays the WebSocket liveness bound.
    config.keep_alive_timeout = settings.http_keep_alive_seconds
    return config


def _os_error(error: BaseException) -> OSError | None:
    """The first OSError in `error`, however deep in nursery groups."""
    if isinstance(error, OSError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _os_error(inner)
            if found is not None:
                return found
    return None


def bind_error(error: BaseException, settings: Settings) -> ConfigError | None:
    """The one line naming HOST or PORT for a failure to listen (API.md, Configuration), else None."""
    cause = _os_error(error)
    if cause is None:
        return None
    host, port = settings.host, settings.port
    if isinstance(cause, socket.gaierror):
        return ConfigError("HOST", f"{host!r} is not a known address ({cause.strerror}); set HOST to an address")
    if cause.errno == errno.EADDRINUSE:
        return ConfigError("PORT", f"{port} is already in use on {host}; set PORT to a free port")
    if cause.errno == errno.EACCES:
        return ConfigError("PORT", f"{port} on {host} needs privileges this process lacks; set PORT above 1023")
    if cause.errno == errno.EADDRNOTAVAIL:
        return ConfigError("HOST", f"{host} is not an address of this machine; set HOST to one (0.0.0.0 for all)")
    return ConfigError("HOST", f"cannot listen on {host} port {port} ({cause.strerror or cause}); check HOST and PORT")


def hold_port(settings: Settings) -> socket.socket:
    """HOST:PORT bound and listening now, as hypercorn would bind it, for `serve_http(held=...)` to serve on.

    Taken before anything slow starts (the embedded database and object store), so a port in use stops the start
    at once with bind_error's one line, and no other process can take the port meanwhile. It listens because a
    socket that only binds with SO_REUSEADDR does not keep another such socket off the port (Linux). Connections
    made before the server is up wait in the backlog. Raises ConfigError naming PORT or HOST.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as hypercorn: a previous run's connections
        sock.bind((settings.host, settings.port))
        sock.listen(socket.SOMAXCONN)
    except OSError as exc:
        sock.close()
        error = bind_error(exc, settings)
        if error is None:
            raise
        raise error from exc
    return sock


async def _hypercorn(
    app: Drain,
    config: DrainConfig,
    shutdown: trio.Event,
    stopped: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(app, config, shutdown_trigger=shutdown.wait, mode="asgi", task_status=task_status)
    stopped.cancel("hypercorn stopped")


async def _drained(app: Drain, connections: Connections) -> None:
    """Return once nothing is in flight and every HTTP/1 connection is closed or owes nothing (WebSocket and
    HTTP/2 ones are left to the caller). Idle ones are closed here, once nothing has been in flight for a while,
    so that a request arriving on one meanwhile is answered rather than cut off."""
    while True:
        await app.wait_drained()
        if not connections.close_idle():
            return
        # A connection is receiving a request, or ending: look again once its answer is out.
        await trio.sleep(DRAIN_SETTLE_SECONDS)


async def _serve_until_drained(
    app: Drain,
    config: DrainConfig,
    shutdown: trio.Event,
    drain_seconds: float,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(_hypercorn, app, config, shutdown, nursery.cancel_scope)
        task_status.started(binds)
        await shutdown.wait()
        # hypercorn has stopped accepting and is waiting for its connections; end that wait as soon as no
        # response is owed. This also skips hypercorn's lifespan shutdown: the app has no after_serving work
        # (actors live in the root nursery, STYLE R4).
        with trio.move_on_after(drain_seconds) as deadline:
            await _drained(app, config.connections)
        if deadline.cancelled_caught:
            # in_flight may be 0: a connection was still receiving a request.
            log.warning("http.drain_deadline", in_flight=app.in_flight, drain_seconds=drain_seconds)
        nursery.cancel_scope.cancel("http drained")


async def serve_http(
    app: ProbedApp,
    settings: Settings,
    shutdown: trio.Event,
    *,
    held: socket.socket | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until `shutdown` is set, then drain in-flight requests for at most DRAIN_SECONDS.

    Reports the bound addresses once listening. A failure before that propagates, so the boot fails: a port
    in use or an address that cannot be bound as a one-line ConfigError naming PORT or HOST. A server that
    stops later while no shutdown was asked for is restarted with backoff.

    `held` (from `hold_port`) is handed to hypercorn, which owns and closes it from then on: the first server
    serves on it, a restarted one binds HOST:PORT again.

    Why the drain is ours: hypercorn's graceful wait after `shutdown_trigger` also waits for idle keep-alive
    connections (hypercorn 0.18 starts their idle timer from the app's task, which quart-trio has just
    cancelled, so the timer never runs and the connection stays open until its read timeout) and for
    WebSocket connections until their ping task next wakes up. Both would hold every shutdown for the whole
    DRAIN_SECONDS while nothing is owed to anyone.
    """
    config = hypercorn_config(settings)
    address = config.bind
    if held is not None:
        config.bind = [f"fd://{held.detach()}"]
    drain = Drain(app, shutdown)
    backoff = Backoff()
    started = False
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(_serve_until_drained, drain, config, shutdown, settings.drain_seconds)
                log.info("http.listening", binds=binds)
                if not started:
                    started = True
                    config.bind = address
                    task_status.started(binds)
        except Exception as exc:
            if not started:
                error = bind_error(exc, settings)
                if error is not None:
                    raise error from exc
                raise
            log.error("http.crashed", error=repr(exc), exc_info=exc)
        if shutdown.is_set():
            log.info("http.drained")
            return
        delay = backoff.delay_after(trio.current_time() - began)
        log.warning("http.restarting", restart_in=round(delay, 3))
        await trio.sleep(delay)
