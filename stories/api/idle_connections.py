"""Closing idle HTTP/1 connections without dropping a request that reached us (the drain, and keep-alive expiry).

An HTTP/1.1 server cannot tell a keep-alive client that it is going away before that client's next request:
closing an idle connection always races a request the client may be sending. Hypercorn 0.18 closes every idle
connection the moment it stops accepting, while a request may already sit unread in the socket: the close then
discards it (a reset) and the client, which saw no `Connection: close`, gets no answer (issue 16, defect 6).

Here, instead:
- an idle connection stays open through the drain, so a request that arrives on it is read and answered (with
  `Connection: close`, see protocol_errors.py);
- the drain closes an idle connection only once nothing is in flight anywhere (`close_idle`), and only when
  nothing of a next request has arrived: no byte in h11's buffer and none unread in the socket. The check and the
  close happen with no checkpoint in between, so a request either was there (and is answered) or arrives after
  the close (the client finds the connection closed: it has sent nothing we read);
- the keep-alive timer (HTTP_KEEP_ALIVE_SECONDS) never closes a connection with bytes unread in its socket
  (they are read first: a whole request is answered; a head still incomplete goes, as in hypercorn), and no
  longer fires early when the server stops: the drain decides that. It is one task for the connection's life,
  which reads when the connection last went idle: hypercorn stops its timer task and starts a new one around
  every request, a fifth of the CPU of its own hello world (bench/floor.md).

`install()` puts `DrainingTCPServer` under the name hypercorn's trio worker builds its connections by (as
protocol_errors.py does for the HTTP/1.1 protocol); its registry travels in `DrainConfig`, one per server.
"""

from __future__ import annotations

import select

import h11
import hypercorn.trio.run
import trio
from hypercorn.config import Config
from hypercorn.events import Event, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import TCPServer

__all__ = ["Connections", "DrainConfig", "DrainingTCPServer", "install"]

# How often an expired keep-alive timer looks again while bytes wait in the socket for the reader.
UNREAD_RECHECK_SECONDS = 0.01


class Connections:
    """The open connections of one server, for its drain to close the idle ones."""

    def __init__(self) -> None:
        self._open: set[DrainingTCPServer] = set()

    def add(self, connection: DrainingTCPServer) -> None:
        self._open.add(connection)

    def discard(self, connection: DrainingTCPServer) -> None:
        self._open.discard(connection)

    def close_idle(self) -> int:
        """Close every HTTP/1 connection that owes no answer; return how many still do (a request arriving,
        being answered, or a connection about to end on its own). WebSocket and HTTP/2 connections are left to
        the drain's end: the app's in-flight count covers their sessions."""
        return sum(not connection.close_if_idle() for connection in list(self._open))


class DrainConfig(Config):
    """Hypercorn's configuration, carrying the registry of the server it configures."""

    def __init__(self) -> None:
        self.connections = Connections()


class DrainingTCPServer(TCPServer):
    """Hypercorn's trio connection, registered for the drain, whose idle close never discards a request."""

    _ended = False  # set once nothing more will be read

    async def run(self) -> None:
        connections = self.config.connections if isinstance(self.config, DrainConfig) else None
        # The keep-alive clock: idle since then, or None while a request is being answered. The connection is idle
        # from its start (hypercorn's timer starts then too).
        self._idle_since: float | None = trio.current_time()
        if connections is not None:
            connections.add(self)
        try:
            await super().run()
        finally:
            if connections is not None:
                connections.discard(self)

    async def protocol_send(self, event: Event) -> None:
        if isinstance(event, Updated) and isinstance(self.config, DrainConfig):
            # Hypercorn stops its timer task at every request and starts a new one after it (a task, a lock and a
            # cancel scope per request: ~20 % of a hello world's CPU, bench/floor.md); this connection's one timer
            # reads the clock instead (`_idle_timeout`).
            self._idle_since = trio.current_time() if event.idle else None
            return
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        await super()._read_data()
        # The client is gone (or we closed): nothing more will be read, and what is being answered counts as in
        # flight in the app. Its keep-alive timer would only hold the connection's end (and the registry).
        self._ended = True
        await self.idle_task.stop()

    def close_if_idle(self) -> bool:
        """Close the connection now if it is idle HTTP/1 with nothing of a next request received; True when it
        owes no answer (closed now, or not HTTP/1), False when a request is arriving or being answered.

        Synchronous on purpose: nothing can be read between the check and the close.
        """
        idle = self._idle_http1()
        if idle is None:
            return True
        if idle:
            self._socket().close()  # wakes the reader, which ends the connection as a client's close would
        return idle

    async def _idle_timeout(self) -> None:
        if not isinstance(self.config, DrainConfig):
            # No drain of ours to close idle connections: as hypercorn (a server a test starts by hand).
            await super()._idle_timeout()
            return
        # One timer for the connection's life (started once by hypercorn, stopped when reading ends): it sleeps until
        # the keep-alive timeout after `_idle_since`, looking again after a whole timeout while a request is being
        # answered. Hypercorn's timer also fires when the server stops, closing whatever it finds; here it is the
        # keep-alive timeout only (the drain closes idle connections itself).
        keep_alive = self.config.keep_alive_timeout
        while True:
            idle_since = self._idle_since
            wait = keep_alive if idle_since is None else idle_since + keep_alive - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
                continue
            between = self._between_requests()
            if between is None:
                with trio.CancelScope(shield=True):
                    await self._initiate_server_close()  # as hypercorn (HTTP/2)
                return
            if not between:
                # A request is being answered (its Updated(idle=False) is on its way): look again after a timeout.
                await trio.sleep(keep_alive)
                continue
            if not self._unread():
                # As hypercorn, a head still incomplete after the timeout goes with the connection: the
                # keep-alive timeout bounds how long a next request may take to arrive (slow clients).
                self._socket().close()
                return
            # The reader takes those bytes first; a whole request stops the clock (Updated(idle=False)).
            await trio.sleep(UNREAD_RECHECK_SECONDS)

    def _idle_http1(self) -> bool | None:
        """For an HTTP/1 connection, whether it is between requests with no byte of the next one received
        (in h11's buffer or unread in the socket): False while it starts, None once its reading has ended and for
        a WebSocket or HTTP/2 one."""
        between = self._between_requests()
        if not between:
            return between
        connection = self._h11()
        assert connection is not None
        return not connection.trailing_data[0] and not self._unread()

    def _between_requests(self) -> bool | None:
        """Whether an HTTP/1 connection has answered its last request and h11 has no next one (bytes of it may
        have arrived): False while it starts, None once its reading has ended and for a WebSocket or HTTP/2 one."""
        if self._ended:
            return None
        if getattr(self, "protocol", None) is None:  # set once the connection has started
            return False
        connection = self._h11()
        if connection is None:
            return None
        return connection.our_state is h11.IDLE and connection.their_state is h11.IDLE

    def _h11(self) -> h11.Connection | None:
        http = self.protocol.protocol
        if isinstance(http, H11Protocol) and isinstance(http.connection, h11.Connection):
            return http.connection
        return None

    def _socket(self) -> trio.socket.SocketType:
        stream: object = self.stream
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        assert isinstance(stream, trio.SocketStream)
        return stream.socket

    def _unread(self) -> bool:
        """Whether the socket holds bytes (or an end) the reader has not taken yet."""
        poll = select.poll()  # not select.select: descriptors past 1024 are common here
        poll.register(self._socket().fileno(), select.POLLIN)
        return bool(poll.poll(0))


def install() -> None:
    """Make hypercorn's trio worker serve its connections with DrainingTCPServer (idempotent)."""
    hypercorn.trio.run.TCPServer = DrainingTCPServer  # type: ignore[attr-defined]
