"""The realtime hub: a registry of per-socket mailboxes, keyed by user (DESIGN.md, STYLE R1/R5).

Not a task: `publish()` is synchronous and never blocks, so neither a request handler nor the relay can be
slowed by a socket. Every open WebSocket gets its own bounded mailbox; a full mailbox drops the event and
counts it, and a mailbox that has stayed full for `stall_seconds` is closed, which makes its socket handler
close the client (slow-client policy).

A closed mailbox carries a `CloseReason`; the socket handler delivers what is still buffered, then closes
the WebSocket with the reason's code.
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

    from stories.actors.messages import Event
    from stories.metrics import Metrics

__all__ = ["DEFAULT_MAILBOX_SIZE", "DEFAULT_STALL_SECONDS", "CloseReason", "Hub", "HubStats", "Mailbox"]

log = structlog.get_logger()

DEFAULT_MAILBOX_SIZE = 64
# A client whose mailbox has been full this long is not catching up: disconnect it so it resyncs.
DEFAULT_STALL_SECONDS = 10.0


class CloseReason(enum.Enum):
    """Why the server ends a socket: the WebSocket close code and reason sent to the client."""

    # 1008 policy violation: the client did not read its events fast enough; some were dropped.
    SLOW_CLIENT = (1008, "too slow: events were dropped; reconnect and refresh")
    # 1001 going away: the server is shutting down.
    SHUTDOWN = (1001, "server shutting down")
    # 1012 service restart: events from other servers may have been missed; reconnect and refresh.
    RESYNC = (1012, "events may have been missed; reconnect and refresh")

    @property
    def code(self) -> int:
        return self.value[0]

    @property
    def reason(self) -> str:
        return self.value[1]


@dataclass(eq=False, slots=True)
class Mailbox:
    """One socket's bounded inbox. The socket handler reads `receive` (`async for`); the hub writes.

    The channel carries client-ready JSON text, serialized once per event whatever the fan-out.
    `full_since` marks a mailbox that dropped an event (trio clock), cleared by the next successful send.
    """

    user_id: UUID
    receive: trio.MemoryReceiveChannel[str]
    _send: trio.MemorySendChannel[str]
    dropped: int = 0
    full_since: float | None = None
    close_reason: CloseReason | None = None

    def close(self, reason: CloseReason) -> None:
        """End the stream: the reader gets what is buffered, then the end. Idempotent; first reason wins."""
        if self.close_reason is None:
            self.close_reason = reason
        self._send.close()

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
    """Owns every open socket's mailbox. Inbox: none (a registry, not a task). Backpressure: drop and count
    per mailbox, close a mailbox that stays full. Restart: nothing to restart; `close_all` ends every socket.

    Must be used from trio (it reads `trio.current_time()`); not thread-safe.
    """

    metrics: Metrics
    mailbox_size: int = DEFAULT_MAILBOX_SIZE
    stall_seconds: float = DEFAULT_STALL_SECONDS
    _mailboxes: dict[UUID, set[Mailbox]] = field(default_factory=dict)
    _closing: CloseReason | None = None

    @contextmanager
    def subscribe(self, user_id: UUID) -> Iterator[Mailbox]:
        """Register a mailbox for one socket of `user_id` for the duration of the block.

        Leaving the block unregisters and closes it (synchronously, so it is safe under cancellation).
        After `close_all(SHUTDOWN)` a new mailbox starts closed, so a socket accepted during shutdown
        closes at once.
        """
        send, receive = trio.open_memory_channel[str](self.mailbox_size)
        mailbox = Mailbox(user_id, receive, send)
        if self._closing is CloseReason.SHUTDOWN:
            mailbox.close(CloseReason.SHUTDOWN)
        self._mailboxes.setdefault(user_id, set()).add(mailbox)
        self.metrics.ws_connections.inc()
        try:
            yield mailbox
        finally:
            self.metrics.ws_connections.dec()
            mailboxes = self._mailboxes.get(user_id)
            if mailboxes is not None:
                mailboxes.discard(mailbox)
                if not mailboxes:
                    del self._mailboxes[user_id]
            send.close()
            receive.close()

    def publish(self, user_id: UUID, event: Event) -> int:
        """Offer `event` to every open socket of `user_id`; return how many took it. Never blocks."""
        mailboxes = self._mailboxes.get(user_id)
        if not mailboxes:
            return 0
        text = event.client_text()
        now = trio.current_time()
        delivered = 0
        # A copy: closing a stalled mailbox below must not disturb the iteration.
        for mailbox in tuple(mailboxes):
            try:
                mailbox._send.send_nowait(text)
            except trio.WouldBlock:
                self._dropped(mailbox, now)
            except trio.ClosedResourceError:
                # Closed for a reason already; its handler is on the way out.
                continue
            else:
                mailbox.full_since = None
                delivered += 1
        return delivered

    def _dropped(self, mailbox: Mailbox, now: float) -> None:
        mailbox.dropped += 1
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

    def resync(self) -> int:
        """Events may have been lost between processes: make every client reconnect and refetch."""
        count = self.close_all(CloseReason.RESYNC)
        if count:
            log.warning("ws.resync", sockets=count)
        return count

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
