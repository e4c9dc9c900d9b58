"""A TCP relay to PostgreSQL that a test controls, so a database outage in a test is a real one.

`Relay` forwards connections from a loopback port to the database a URL names; `via(relay, url)` is that URL
reached through the relay. `stop()` closes the port and every relayed connection (the database is gone: new
connections are refused), `restart()` listens on the same port again, `stall()` keeps accepting but forwards
nothing (the database hangs) until `resume()`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["Relay", "open_relay", "via"]

RELAY_CHUNK = 65_536


class Relay:
    """Forwards TCP connections from a local port to PostgreSQL. `stop()` closes the port and every
    relayed connection (the database is gone); `stall()` keeps accepting but forwards nothing (it hangs)."""

    def __init__(self, database_url: str) -> None:
        parts = urlsplit(database_url)
        socket_dir = parse_qs(parts.query).get("host", [""])[0]
        # The embedded server listens on a unix socket (?host=<dir>); the machine's on TCP.
        self.unix_path = f"{socket_dir}/.s.PGSQL.{parts.port or 5432}" if socket_dir.startswith("/") else None
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = 0
        self.flowing = trio.Event()
        self.flowing.set()
        self._scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Listen (on the same port again after a stop) and relay until stopped."""
        self._nursery = nursery
        self._scope = trio.CancelScope()
        self.port = await nursery.start(self._serve, self._scope)

    async def restart(self) -> None:
        assert self._nursery is not None
        await self.start(self._nursery)

    def stop(self) -> None:
        self._scope.cancel("database outage")

    def stall(self) -> None:
        self.flowing = trio.Event()

    def resume(self) -> None:
        self.flowing.set()

    async def _serve(self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[int]) -> None:
        with scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            async with trio.open_nursery() as connections:
                task_status.started(listeners[0].socket.getsockname()[1])
                await trio.serve_listeners(self._relay, listeners, handler_nursery=connections)

    async def _relay(self, client: trio.SocketStream) -> None:
        try:
            if self.unix_path is not None:
                upstream: trio.abc.Stream = await trio.open_unix_socket(self.unix_path)
            else:
                upstream = await trio.open_tcp_stream(*self.target)
        except OSError:
            # The database itself is unreachable: the client sees its connection closed, as it would directly.
            await client.aclose()
            return
        async with client, upstream, trio.open_nursery() as pumps:
            pumps.start_soon(self._pump, client, upstream, pumps.cancel_scope)
            pumps.start_soon(self._pump, upstream, client, pumps.cancel_scope)

    async def _pump(self, source: trio.abc.Stream, sink: trio.abc.Stream, both: trio.CancelScope) -> None:
        try:
            while data := await source.receive_some(RELAY_CHUNK):
                await self.flowing.wait()
                await sink.send_all(data)
        except trio.BrokenResourceError:
            pass
        # One side hung up: end the relayed connection both ways.
        both.cancel("peer closed")


@asynccontextmanager
async def open_relay(database_url: str) -> AsyncIterator[Relay]:
    """A started relay to `database_url`'s server, stopped (every connection closed) at the end."""
    relay = Relay(database_url)
    async with trio.open_nursery() as nursery:
        await relay.start(nursery)
        yield relay
        nursery.cancel_scope.cancel("relay no longer needed")


def via(relay: Relay, database_url: str) -> str:
    """The same database, reached through the relay's TCP port."""
    parts = urlsplit(database_url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{relay.port}", query=query))
