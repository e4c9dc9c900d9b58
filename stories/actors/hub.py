"""The realtime hub: a registry of per-socket mailboxes, keyed by user (docs/ARCHITECTURE.md, STYLE R1/R5).

Not a task: `publish()` is synchronous and never blocks, so the relay is never slowed by a socket. The relay
publishes the event log in id order, and `position` is how far it has got. Every open WebSocket gets its own
bounded mailbox, which remembers the position when it opened (`start`): the socket's handler can always ask the
log for what its mailbox missed. A full mailbox drops the event, counts it and marks the mailbox (`gap`), and
the handler refills the gap from the log; a mailbox that stays full for `stall_seconds` is closed (slow client).

A closed mailbox carries a `CloseReason`; the socket handler delivers what is still buffered, then closes the
WebSocket with the reason's code. A user holds at most `max_sockets_per_user` mailboxes: opening one more
closes their oldest.
"""

from __future__ import annotations

import enum
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
import trio

if TYPE_CHECKING:
    from collections.abc import Iterator
    from uuid import UUID

    from stories.domain import EventId
    from stories.events import Event
    from stories.metrics import Metrics

__all__ = [
    "DEFAULT_MAILBOX_SIZE",
    "DEFAULT_MAX_SOCKETS_PER_USER",
    "DEFAULT_STALL_SECONDS",
    "CloseReason",
    "Delivery",
    "Hub",
    "HubStats",
    "Mailbox",
]

log = structlog.get_logger()

DEFAULT_MAILBOX_SIZE = 64
# A client whose mailbox has been full this long is not catching up: disconnect it (it reconnects with after=).
DEFAULT_STALL_SECONDS = 10.0
# API.md: each user may hold at most 10 sockets per process.
DEFAULT_MAX_SOCKETS_PER_USER = 10

# What a mailbox carries: the event's id (to skip what a replay already sent) and its client text, serialized
# once per event whatever the fan-out.
Delivery = tuple["EventId", str]


class CloseReason(enum.Enum):
    """Why the server ends a socket: the WebSocket close code and reason sent to the client."""

    # 1008 policy violation: the client did not read its events fast enough.
    SLOW_CLIENT = (1008, "too slow to keep up; reconnect with after=<last event id>")
    # 1008 too: the 11th socket of one user in one process closes the oldest.
    TOO_MANY_SOCKETS = (1008, "too many sockets for this user; the oldest was closed")
    # 1008: the token the socket was opened with has expired.
    TOKEN_EXPIRED = (1008, "the token has expired; reconnect with a new one")
    # 1008: the session the socket was opened with was revoked (logout, a password change, a reused refresh token).
    SESSION_REVOKED = (1008, "the session was revoked; log in again")
    # 1008: the user was suspended (API.md: their tokens answer 403 account_suspended).
    ACCOUNT_SUSPENDED = (1008, "the account is suspended")
    # 1008: the user no longer exists.
    ACCOUNT_GONE = (1008, "the account no longer exists")
    # 1001 going away: the server is shutting down.
    SHUTDOWN = (1001, "server shutting down")
    # 1012 service restart: this server could not deliver events it owes the socket.
    RESYNC = (1012, "events were missed; reconnect with after=<last event id>")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


@dataclass(eq=False, slots=True)
class Mailbox:
    """One socket's bounded inbox. The socket handler reads `receive` (`async for`); the hub writes.

    `start` is the hub's position when the mailbox opened: every later event is either in the mailbox or,
    when `gap` is set, in the log after the last one the handler sent. `full_since` marks a mailbox that
    dropped an event (trio clock), cleared by the next successful send.
    """

    user_id: UUID
    receive: trio.MemoryReceiveChannel[Delivery]
    _send: trio.MemorySendChannel[Delivery]
    start: EventId | None
    # The session whose token opened the socket (None: opened by code that has no session, e.g. tests of the hub).
    session_id: UUID | None = None
    dropped: int = 0
    gap: bool = False
    full_since: float | None = None
    close_reason: CloseReason | None = None

    def close(self, reason: CloseReason) -> None:
        """End the stream: the reader gets what is buffered, then the end. Idempotent; first reason wins."""
        if self.close_reason is None:
            self.close_reason = reason
        self._send.close()

    def take_gap(self) -> bool:
        """Whether events were dropped since the last call (the handler then refills from the log)."""
        gap, self.gap = self.gap, False
        return gap

    @property
    def backlog(self) -> int:
        return self._send.statistics().current_buffer_used


@dataclass(frozen=True, slots=True)
class HubStats:
    connections: int
    users: int
    backlog: int


@dataclass(slots=True)
class Hub:
    """Owns every open socket's mailbox. Inbox: none (a registry, not a task). Backpressure: drop, count and
    mark per mailbox, close a mailbox that stays full. Restart: nothing to restart; `close_all` ends every socket.

    Must be used from trio (it reads `trio.current_time()`); not thread-safe.
    """

    metrics: Metrics
    mailbox_size: int = DEFAULT_MAILBOX_SIZE
    stall_seconds: float = DEFAULT_STALL_SECONDS
    max_sockets_per_user: int = DEFAULT_MAX_SOCKETS_PER_USER
    # Where the relay has got in the event log (None until it first reads it).
    position: EventId | None = None
    # Per user, their mailboxes oldest first (a dict keeps insertion order).
    _mailboxes: dict[UUID, dict[Mailbox, None]] = field(default_factory=dict)
    _closing: CloseReason | None = None

    @contextmanager
    def subscribe(self, user_id: UUID, session_id: UUID | None = None) -> Iterator[Mailbox]:
        """Register a mailbox for one socket of `user_id` for the duration of the block.

        Leaving the block unregisters and closes it (synchronously, so it is safe under cancellation).
        After `close_all(SHUTDOWN)` a new mailbox starts closed, so a socket accepted during shutdown
        closes at once. The user's oldest open mailbox is closed when this one would exceed the limit.
        """
        send, receive = trio.open_memory_channel[Delivery](self.mailbox_size)
        mailbox = Mailbox(user_id, receive, send, self.position, session_id)
        if self._closing is CloseReason.SHUTDOWN:
            mailbox.close(CloseReason.SHUTDOWN)
        mailboxes = self._mailboxes.setdefault(user_id, {})
        open_ones = [m for m in mailboxes if m.close_reason is None]
        if len(open_ones) >= self.max_sockets_per_user:
            log.info("ws.too_many_sockets", user_id=str(user_id), limit=self.max_sockets_per_user)
            open_ones[0].close(CloseReason.TOO_MANY_SOCKETS)
        mailboxes[mailbox] = None
        self.metrics.ws_connections.inc()
        try:
            yield mailbox
        finally:
            self.metrics.ws_connections.dec()
            mailboxes = self._mailboxes.get(user_id, {})
            mailboxes.pop(mailbox, None)
            if not mailboxes:
                self._mailboxes.pop(user_id, None)
            send.close()
            receive.close()

    def publish(self, event: Event) -> int:
        """Offer `event` to every open socket of its author and move `position` to it; return how many
        sockets took it. Never blocks. The relay calls this in event-id order."""
        self.position = event.id
        mailboxes = self._mailboxes.get(event.author_id)
        if not mailboxes:
            return 0
        delivery = (event.id, event.client_text())
        now = trio.current_time()
        delivered = 0
        # A copy: closing a stalled mailbox below must not disturb the iteration.
        for mailbox in tuple(mailboxes):
            try:
                mailbox._send.send_nowait(delivery)
            except trio.WouldBlock:
                self._dropped(mailbox, now)
            except trio.ClosedResourceError:
                # Closed for a reason already; its handler is on the way out.
                continue
            else:
                mailbox.full_since = None
                delivered += 1
        return delivered

    def advance(self, position: EventId) -> None:
        """The relay has read the log up to `position` (no event of it was for anyone)."""
        if self.position is None or position > self.position:
            self.position = position

    def _dropped(self, mailbox: Mailbox, now: float) -> None:
        mailbox.dropped += 1
        mailbox.gap = True
        self.metrics.ws_events_dropped.inc()
        if mailbox.full_since is None:
            mailbox.full_since = now
            log.info("ws.mailbox_full", user_id=str(mailbox.user_id), size=self.mailbox_size)
        elif now - mailbox.full_since >= self.stall_seconds:
            log.warning(
                "ws.slow_client_closed",
                user_id=str(mailbox.user_id),
                dropped=mailbox.dropped,
                full_seconds=round(now - mailbox.full_since, 3),
            )
            mailbox.close(CloseReason.SLOW_CLIENT)

    def close_all(self, reason: CloseReason) -> int:
        """Close every open mailbox with `reason`; return how many. After SHUTDOWN, new ones start closed."""
        if reason is CloseReason.SHUTDOWN:
            self._closing = reason
        count = 0
        for mailboxes in self._mailboxes.values():
            for mailbox in mailboxes:
                mailbox.close(reason)
                count += 1
        return count

    def close_user(self, user_id: UUID, reason: CloseReason) -> int:
        """Close every open mailbox of `user_id` with `reason`; return how many."""
        mailboxes = tuple(self._mailboxes.get(user_id, ()))
        for mailbox in mailboxes:
            mailbox.close(reason)
        return len(mailboxes)

    def close_session(self, session_id: UUID, reason: CloseReason) -> int:
        """Close every open mailbox opened with `session_id`; return how many. A scan of every socket:
        revocations are rare next to events, and an index per session would cost every socket memory."""
        closing = [
            mailbox
            for mailboxes in self._mailboxes.values()
            for mailbox in mailboxes
            if mailbox.session_id == session_id and mailbox.close_reason is None
        ]
        for mailbox in closing:
            mailbox.close(reason)
        return len(closing)

    def has_sockets(self, user_id: UUID) -> bool:
        return user_id in self._mailboxes

    def users(self) -> list[UUID]:
        """The users with at least one socket open here."""
        return list(self._mailboxes)

    async def close_all_on(self, shutdown: trio.Event) -> None:
        """Wait for `shutdown`, then close every socket with 1001 (runs in the root nursery)."""
        await shutdown.wait()
        count = self.close_all(CloseReason.SHUTDOWN)
        log.info("ws.closing_all", sockets=count)

    def stats(self) -> HubStats:
        """Open sockets, users with at least one, and events waiting in mailboxes (for the exporter)."""
        connections = 0
        backlog = 0
        for mailboxes in self._mailboxes.values():
            connections += len(mailboxes)
            backlog += sum(mailbox.backlog for mailbox in mailboxes)
        return HubStats(connections=connections, users=len(self._mailboxes), backlog=backlog)
