"""GET /ws: the author's realtime events (API.md "Realtime").

The upgrade is checked before it is accepted: the JWT (`Authorization: Bearer` or `?token=`) and `after`. A bad
or missing token answers `401`, a malformed `after` `400`, with API.md's error body instead of upgrading
(hypercorn implements ASGI's websocket.http.response extension). Every answer, refusal or 101, carries
`X-Request-ID` by the HTTP routes' rule (hooks.py `request_id_for`). An accepted socket gets a mailbox in the hub;
with `after`, the handler first replays what the client missed from the event log, then writes each event from
the mailbox, skipping what the replay sent (`_Stream`). The socket ends when:
- the client goes away (`_Incoming` cancels the socket's nursery; leaving `hub.subscribe` unregisters the mailbox);
- the hub closes the mailbox: 1008 slow client or an 11th socket of the user, 1001 shutdown; events already in
  the mailbox are written first;
- its token expires (1008), or events it is owed cannot be read from the log (1012: reconnect with after=);
- its session is revoked, or its user suspended or deleted (1008; stories/actors/access.py closes the mailbox).

Keepalive is the server's: hypercorn sends a WebSocket ping every `ping_interval` (clients answer with a
pong, browsers and trio-websocket do so on their own), and a connection from which nothing at all (not even
a pong) arrives for `dead_after` is dropped as dead. ASGI gives the app neither pings nor pongs, nor the size of
a message before it is whole, so `configure_websockets` applies these and the message size cap to the server's
config.

This endpoint is plain ASGI, routed by `StoriesApp` before Quart sees the scope: with 10,000 sockets in one
process, Quart's per-socket websocket context, its two tasks and its message channel were about a third of a
socket's memory (bench/realtime.md). The API gives a socket nothing that needs them: no hooks, no cookies, no
route parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import orjson
import structlog
import trio

from stories.actors.hub import CloseReason
from stories.api.authentication import bearer_token, token_expiry
from stories.api.declare import Route
from stories.api.hooks import request_id_for
from stories.api.json_io import JSON_CONTENT_TYPE
from stories.api.openapi import AFTER_PARAM, error_answer, error_example
from stories.domain import REPLAY_WINDOW, EventId, MalformedEventId
from stories.errors import (
    AccountSuspended,
    ApiError,
    InvalidRequest,
    Overloaded,
    RateLimited,
    SessionRevoked,
    Unauthorized,
    Unavailable,
)
from stories.events import RESYNC_TEXT
from stories.settings import DEFAULT_WS_DEAD_AFTER_SECONDS, DEFAULT_WS_PING_INTERVAL_SECONDS

if TYPE_CHECKING:
    from datetime import datetime

    from hypercorn.config import Config
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, WebsocketScope

    from stories.actors.hub import Mailbox
    from stories.api.deps import AppDeps
    from stories.metrics import Metrics
    from stories.store.events import EventLog, ReplayPage

__all__ = [
    "MAX_CLIENT_MESSAGE_BYTES",
    "PATH",
    "REPLAY_LIMIT",
    "REPLAY_WINDOW",
    "ROUTE",
    "configure_websockets",
    "serve_socket",
]

log = structlog.get_logger()

PATH = "/ws"
# Served by `serve_socket`, not a Quart view: the app adds its rule (a plain GET of it answers 426).
ROUTE = Route(
    "GET",
    PATH,
    "events",
    "realtime",
    "WebSocket: realtime events for your stories",
    {
        "101": {"description": "switching protocols: the server sends JSON text messages"},
        "426": error_answer(
            "upgrade_required: a plain HTTP request, not a WebSocket upgrade",
            ("upgrade_required",),
            error_example("upgrade_required", "/ws is a WebSocket: send an upgrade request"),
            {"Upgrade": {"description": "websocket", "schema": {"const": "websocket"}}},
        ),
    },
    description="Upgrade with `Authorization: Bearer <jwt>` or `?token=<jwt>` (browsers cannot set "
    'headers on a WebSocket). Messages: `{"type": "story.viewed", "id", "payload": {story_id, '
    'viewer_id, viewed_at}}` and `{"type": "story.reacted", "id", "payload": {story_id, user_id, '
    "emoji, created_at}}`, only to the story's author. With `?after=<last event id seen>`, first every "
    'event since (oldest first, at most 7 days and 1,000, else a {"type": "resync"} message), then the '
    "live stream, with no gap and no duplicate. Client messages are ignored and capped at 4 KiB (1009). "
    "Close codes: 1001 server shutting down; 1008 too slow to keep up, an 11th socket of one user (the "
    "oldest closes), or the token expired; 1012 events were missed: reconnect with after=.",
    parameters=[
        {
            "name": "token",
            "in": "query",
            "description": "the JWT, for clients that cannot send headers",
            "schema": {"type": "string"},
        },
        AFTER_PARAM,
    ],
    table_answer="WebSocket upgrade: realtime events",
)
# API.md: messages from clients are capped at 4 KiB (the API defines none; this bounds what a client can make
# the server buffer).
MAX_CLIENT_MESSAGE_BYTES = 4096
# API.md: a reconnecting client gets at most the last 7 days and at most 1,000 events, else `resync`.
REPLAY_LIMIT = 1000


def configure_websockets(
    config: Config,
    *,
    ping_interval: float = DEFAULT_WS_PING_INTERVAL_SECONDS,
    dead_after: float = DEFAULT_WS_DEAD_AFTER_SECONDS,
) -> None:
    """Cap client messages at MAX_CLIENT_MESSAGE_BYTES (a larger one closes the socket with 1009), and make
    hypercorn ping every socket every `ping_interval` and drop a connection silent for `dead_after`.

    `dead_after` is hypercorn's read timeout, so it also bounds how long an HTTP client may stay silent
    (idle keep-alive, or waiting for a response): keep it well above the slowest request.
    """
    if not 0 < ping_interval < dead_after:
        raise ValueError("the WebSocket ping interval must be positive and shorter than dead_after")
    config.websocket_max_message_size = MAX_CLIENT_MESSAGE_BYTES
    config.websocket_ping_interval = ping_interval
    # hypercorn takes whole seconds here.
    config.read_timeout = math.ceil(dead_after)


def _header(scope: WebsocketScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _query(scope: WebsocketScope) -> dict[str, str]:
    """The query string's parameters, the first value of each (as Quart's `args.get` would)."""
    pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
    query: dict[str, str] = {}
    for name, value in pairs:
        query.setdefault(name, value)
    return query


def _token(scope: WebsocketScope, query: dict[str, str]) -> str:
    token = bearer_token(_header(scope, b"authorization"))
    if token is not None:
        return token
    token = query.get("token", "").strip()
    if not token:
        raise Unauthorized("missing token: send Authorization: Bearer <token> or ?token=<token>")
    return token


def _after(query: dict[str, str]) -> EventId | None:
    raw = query.get("after")
    if raw is None:
        return None
    try:
        return EventId.parse(raw)
    except MalformedEventId as exc:
        raise InvalidRequest(f"after: {exc}", fields={"after": str(exc)}) from None


async def _refuse(send: ASGISendCallable, error: ApiError, request_id: str) -> None:
    """Answer the upgrade with API.md's error body and headers, as the HTTP routes do (hooks.py `_api_error`
    and `_after_request`); hypercorn implements ASGI's websocket.http.response."""
    log.info("ws.refused", status=error.status, reason=error.message)
    body: dict[str, object] = {"error": error.code, "message": error.message}
    fields = getattr(error, "fields", None)
    if fields:
        body["fields"] = fields
    headers = [(b"content-type", JSON_CONTENT_TYPE.encode()), (b"x-request-id", request_id.encode())]
    if isinstance(error, Unauthorized):
        headers.append((b"www-authenticate", b'Bearer realm="stories"'))
    if isinstance(error, RateLimited | Overloaded):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    await send({"type": "websocket.http.response.start", "status": error.status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": orjson.dumps(body), "more_body": False})


# No Origin check: CORS does not apply to WebSockets, and this socket authenticates with a token the page
# must hold (never a cookie), so a foreign page cannot ride a user's session. Native clients send no Origin.
async def serve_socket(
    app: AppDeps, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """The ASGI application of `GET /ws` (the app routes it here, outside Quart: see the module docstring)."""
    if (await receive())["type"] != "websocket.connect":
        return
    query = _query(scope)
    # Every answer to the upgrade, a refusal or the 101, carries X-Request-ID as the HTTP routes' do (hooks.py).
    request_id = request_id_for(_header(scope, b"x-request-id"))
    upgrading = False
    timeout = app.settings.request_timeout_seconds
    # Bound in contextvars for the upgrade only, as the HTTP hooks bind it for a request; the socket's own log
    # lines name it themselves (a binding for the socket's life costs memory per socket: see user_id below).
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            # The upgrade is a request: it gets the same deadline (REQUEST_TIMEOUT_SECONDS), so a hung dependency
            # answers 503 instead of holding the connection, and the drain, without end.
            with trio.move_on_after(timeout):
                token = _token(scope, query)
                claims = await app.callers.authenticate(token)
                after = _after(query)
                upgrading = True
            if not upgrading:
                log.warning("ws.upgrade_timeout", seconds=timeout)
                raise Overloaded(f"the upgrade took longer than {timeout:g} s; retry shortly", retry_after=1)
        except ApiError as exc:
            # Bad input, and also a store that cannot say whether the user exists (503): never hypercorn's 500.
            await _refuse(send, exc, request_id)
            return
    await send({"type": "websocket.accept", "subprotocol": None, "headers": [(b"x-request-id", request_id.encode())]})
    expires_at = trio.current_time() + token_expiry(token) - app.clock.now().timestamp()
    user_id = claims.user_id
    # user_id goes into each log line rather than into bound contextvars: a binding per socket costs memory.
    user = str(user_id)
    with app.hub.subscribe(user_id, claims.session_id) as mailbox:
        log.info("ws.connected", user_id=user, request_id=request_id, after=None if after is None else str(after))
        await _recheck(app, token, mailbox)
        incoming = _Incoming(receive)
        closed: CloseReason | None = None
        try:
            async with trio.open_nursery() as nursery:
                # The token's expiry is the deadline of the socket's nursery: no scope or task of its own.
                nursery.cancel_scope.deadline = expires_at
                nursery.start_soon(incoming.read_until_disconnect, nursery.cancel_scope)
                since = app.clock.now() - REPLAY_WINDOW
                await _Stream(mailbox, send, app.events, app.metrics, since, request_id).run(after)
                nursery.cancel_scope.cancel("mailbox closed")
            if not incoming.client_left:
                if mailbox.close_reason is None:
                    # Neither the client nor the mailbox ended the stream: the deadline did.
                    log.info("ws.token_expired", user_id=user, request_id=request_id)
                    mailbox.close(CloseReason.TOKEN_EXPIRED)
                closed = mailbox.close_reason or CloseReason.SHUTDOWN
                await send({"type": "websocket.close", "code": closed.code, "reason": closed.reason})
        finally:
            # Sync, no await: also reached when the handler is cancelled.
            log.info(
                "ws.disconnected",
                user_id=user,
                request_id=request_id,
                by="server" if closed else "client",
                code=closed.code if closed else None,
                dropped=mailbox.dropped,
            )


async def _recheck(app: AppDeps, token: str, mailbox: Mailbox) -> None:
    """Authenticate again once the mailbox is registered: a revocation or suspension processed between the
    upgrade's check and the registration found no mailbox to close, and is caught here (closed with 1008)."""
    try:
        await app.callers.authenticate(token)
    except SessionRevoked:
        mailbox.close(CloseReason.SESSION_REVOKED)
    except AccountSuspended:
        mailbox.close(CloseReason.ACCOUNT_SUSPENDED)
    except Unauthorized:
        mailbox.close(CloseReason.ACCOUNT_GONE)
    except Unavailable:
        # Checked a moment ago; the access watcher closes the socket if its session or user is refused later.
        return


class _Incoming:
    """Reads what the client sends, until it goes away (then ends the socket's nursery).

    The API defines no client messages. Reading them anyway keeps the server's inbound queue from filling up,
    which would stop it from noticing the client's disconnect. Their size is capped by the server
    (MAX_CLIENT_MESSAGE_BYTES; a larger one closes the socket with 1009).
    """

    __slots__ = ("client_left", "receive")

    def __init__(self, receive: ASGIReceiveCallable) -> None:
        self.receive = receive
        self.client_left = False

    async def read_until_disconnect(self, socket_scope: trio.CancelScope) -> None:
        while (await self.receive())["type"] != "websocket.disconnect":
            pass
        self.client_left = True
        socket_scope.cancel("client left")


@dataclass(slots=True, eq=False)
class _Stream:
    """One socket's events, in id order, each once: a replay from the log, then the mailbox.

    `cursor` is the id of the last event sent (or the hub's position when the socket opened): the mailbox
    holds every later event, except those it dropped when full (`gap`), which are read back from the log.
    An event the mailbox holds at or below the cursor was sent by a replay already, and is skipped.
    """

    mailbox: Mailbox
    send: ASGISendCallable
    log: EventLog
    metrics: Metrics
    since: datetime
    request_id: str
    cursor: EventId | None = field(init=False)

    def __post_init__(self) -> None:
        self.cursor = self.mailbox.start

    async def run(self, after: EventId | None) -> None:
        """Until the mailbox is closed (by the hub, or here when the log cannot be read)."""
        if after is None:
            if not await self._start_now():
                return
        elif not await self._catch_up(after):
            return
        async for event_id, text in self.mailbox.receive:
            if self.cursor is None or event_id > self.cursor:
                await self._send(event_id, text)
            if self.mailbox.take_gap() and not await self._refill():
                return

    async def _send(self, event_id: EventId, text: str) -> None:
        await self._send_text(text)
        self.cursor = event_id
        self.metrics.ws_events_sent.inc()

    async def _send_text(self, text: str) -> None:
        await self.send({"type": "websocket.send", "bytes": None, "text": text})

    async def _catch_up(self, after: EventId) -> bool:
        """Everything after the client's `after`; or `resync` when that is more than the log keeps for it."""
        page = await self._replay(after, vouched=False)
        if page is None:
            return False
        if page.stale or page.more:
            log.info(
                "ws.resync_sent",
                user_id=str(self.mailbox.user_id),
                request_id=self.request_id,
                stale=page.stale,
                more=page.more,
            )
            await self._send_text(RESYNC_TEXT)
            # The client refetches after this: what was committed below the horizon is in what it fetches.
            horizon = EventId(page.horizon, 0)
            self.cursor = horizon if self.cursor is None else max(self.cursor, horizon)
            return True
        self.cursor = after if self.cursor is None or after > self.cursor else self.cursor
        for event in page.events:
            await self._send(event.id, event.client_text())
        return True

    async def _start_now(self) -> bool:
        """Without `after`, the stream starts at the log's position now (the mailbox is already open, so it
        holds every later event): the hub's position can lag behind the log, and an event committed before
        the socket opened (a view answered before the upgrade) would otherwise arrive as if it were live."""
        try:
            position = await self.log.position()
        except Unavailable as exc:
            log.warning(
                "ws.position_failed", user_id=str(self.mailbox.user_id), request_id=self.request_id, error=exc.message
            )
            self.mailbox.close(CloseReason.RESYNC)
            return False
        self.cursor = position if self.cursor is None else max(self.cursor, position)
        return True

    async def _refill(self) -> bool:
        """The mailbox dropped events: send them from the log (a client too far behind is closed)."""
        if self.cursor is None:
            # The relay had not read the log yet when the socket opened: there is no place to refill from.
            self.mailbox.close(CloseReason.RESYNC)
            return False
        page = await self._replay(self.cursor, vouched=True)
        if page is None:
            return False
        if page.more:
            self.mailbox.close(CloseReason.SLOW_CLIENT)
            return False
        for event in page.events:
            await self._send(event.id, event.client_text())
        return True

    async def _replay(self, after: EventId, *, vouched: bool) -> ReplayPage | None:
        try:
            return await self.log.replay(self.mailbox.user_id, after, REPLAY_LIMIT, self.since, vouched=vouched)
        except Unavailable as exc:
            # Events are owed and cannot be read: the client reconnects (perhaps elsewhere) with after=.
            log.warning(
                "ws.replay_failed", user_id=str(self.mailbox.user_id), request_id=self.request_id, error=exc.message
            )
            self.mailbox.close(CloseReason.RESYNC)
            return None
