"""GET /ws: the author's realtime events (API.md "Realtime").

The upgrade is authenticated before it is accepted (the JWT from `Authorization: Bearer` or `?token=`); a
bad or missing token answers `401` with API.md's error body instead of upgrading (hypercorn implements
ASGI's websocket.http.response extension). An accepted socket gets a mailbox in the hub, and its handler
writes each event from the mailbox to the socket. The socket ends when:
- the client goes away (the handler is cancelled; leaving `hub.subscribe` unregisters the mailbox);
- the hub closes the mailbox: 1008 slow client, 1001 shutdown, 1012 resync (see `CloseReason`); events
  already in the mailbox are written first.

Keepalive is the server's: hypercorn sends a WebSocket ping every `ping_interval` (clients answer with a
pong, browsers and trio-websocket do so on their own), and a connection from which nothing at all (not even
a pong) arrives for `dead_after` is dropped as dead. ASGI gives the app neither pings nor pongs, so
`configure_keepalive` applies this to the server's config.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Protocol, cast

import structlog
import trio
from quart import Blueprint, Response, websocket
from quart_cors import cors_exempt

from stories.actors.hub import CloseReason
from stories.api.bodies import error_response
from stories.api.deps import deps
from stories.errors import Unauthorized
from stories.settings import DEFAULT_WS_DEAD_AFTER_SECONDS, DEFAULT_WS_PING_INTERVAL_SECONDS

if TYPE_CHECKING:
    from uuid import UUID

    from hypercorn.config import Config

    from stories.actors.hub import Hub, Mailbox
    from stories.metrics import Metrics

__all__ = [
    "RealtimeDeps",
    "blueprint",
    "configure_keepalive",
]

log = structlog.get_logger()

blueprint = Blueprint("ws", __name__)


class _Authenticator(Protocol):
    async def authenticate(self, token: str) -> UUID: ...


class RealtimeDeps(Protocol):
    """What this blueprint needs from the app's collaborators (`AppDeps` provides it)."""

    @property
    def callers(self) -> _Authenticator: ...

    @property
    def hub(self) -> Hub: ...

    @property
    def metrics(self) -> Metrics: ...


def configure_keepalive(
    config: Config,
    *,
    ping_interval: float = DEFAULT_WS_PING_INTERVAL_SECONDS,
    dead_after: float = DEFAULT_WS_DEAD_AFTER_SECONDS,
) -> None:
    """Make hypercorn ping every socket every `ping_interval` and drop a connection silent for `dead_after`.

    `dead_after` is hypercorn's read timeout, so it also bounds how long an HTTP client may stay silent
    (idle keep-alive, or waiting for a response): keep it well above the slowest request.
    """
    if not 0 < ping_interval < dead_after:
        raise ValueError("the WebSocket ping interval must be positive and shorter than dead_after")
    config.websocket_ping_interval = ping_interval
    # hypercorn takes whole seconds here.
    config.read_timeout = math.ceil(dead_after)


def _token() -> str:
    header = websocket.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return token.strip()
    token = websocket.args.get("token", "").strip()
    if not token:
        raise Unauthorized("missing token: send Authorization: Bearer <token> or ?token=<token>")
    return token


@blueprint.websocket("/ws")
# No Origin check: CORS does not apply to WebSockets, and this socket authenticates with a token the page
# must hold (never a cookie), so a foreign page cannot ride a user's session. Native clients send no Origin.
@cors_exempt
async def events() -> Response | None:
    app = cast("RealtimeDeps", deps())
    try:
        user_id = await app.callers.authenticate(_token())
    except Unauthorized as exc:
        log.info("ws.refused", reason=exc.message)
        # Returned before accept(): the server answers this HTTP response instead of upgrading.
        response = error_response(exc.status, exc.code, exc.message)
        response.headers["WWW-Authenticate"] = 'Bearer realm="stories"'
        return response
    await websocket.accept()
    with structlog.contextvars.bound_contextvars(user_id=str(user_id)), app.hub.subscribe(user_id) as mailbox:
        log.info("ws.connected")
        closed: CloseReason | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_ignore_incoming)
                await _deliver(mailbox, app.metrics)
                nursery.cancel_scope.cancel("mailbox closed")
            closed = mailbox.close_reason or CloseReason.SHUTDOWN
            await websocket.close(closed.code, closed.reason)
        finally:
            # Also reached when the client left first (the handler is cancelled then): sync, no await.
            log.info(
                "ws.disconnected",
                by="server" if closed else "client",
                code=closed.code if closed else None,
                dropped=mailbox.dropped,
            )
    return None


async def _deliver(mailbox: Mailbox, metrics: Metrics) -> None:
    """Write each event to the socket, in order, until the hub closes the mailbox."""
    async for text in mailbox.receive:
        await websocket.send(text)
        metrics.ws_events_sent.inc()


async def _ignore_incoming() -> None:
    # The API defines no client messages. Reading them anyway keeps the server's inbound queue from
    # filling up, which would stop it from noticing the client's disconnect.
    while True:
        await websocket.receive()
