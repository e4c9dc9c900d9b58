"""`stories listen`: a user's realtime events from /ws, printed as JSON lines on stdout.

A client for the walkthrough and for operators: the same events a mobile client gets, with nothing to install
beyond the service. The token goes in the `Authorization` header, so it stays out of the server's logs.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import orjson
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, wrap_client_stream
from wsproto.utilities import LocalProtocolError

if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["ListenFailed", "listen", "websocket_target"]

E = TypeVar("E", bound=BaseException)

# Bounds the closing handshake and the stream's close: the events are printed already.
CLOSE_SECONDS = 1.0
_SCHEMES = {"http": False, "ws": False, "https": True, "wss": True}


class ListenFailed(Exception):
    """The connection could not be made, was refused, or ended before the events asked for arrived."""


def websocket_target(url: str) -> tuple[str, int, str, bool]:
    """(host, port, resource, tls) of the /ws endpoint of `url`: `http(s)://host[:port]` (the API's base URL,
    `/ws` added) or `ws(s)://host[:port]/path`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise ListenFailed(f"--url {url!r} is not a URL ({error})") from None
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ListenFailed(f"--url must be http(s)://host[:port] or ws(s)://host[:port]/ws (got {url!r})")
    tls = _SCHEMES[parts.scheme]
    path = parts.path if parts.path not in ("", "/") else "/ws"
    resource = f"{path}?{parts.query}" if parts.query else path
    return parts.hostname, port or (443 if tls else 80), resource, tls


async def listen(url: str, token: str, *, count: int | None, out: TextIO) -> None:
    """Print each event as one JSON line on `out` (flushed), until `count` events (None: until cancelled).

    Says on stderr once it is subscribed. Raises ListenFailed with a one-line reason for anything that ends
    it early: no connection, a refused upgrade (a bad token is `401`), the server closing the socket.
    """
    host, port, resource, tls = websocket_target(url)
    try:
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
        if tls:
            stream = await trio.open_ssl_over_tcp_stream(host, port, https_compatible=True)
        else:
            stream = await trio.open_tcp_stream(host, port)
    except OSError as error:
        raise ListenFailed(f"cannot connect to {host}:{port} ({error.strerror or error})") from None
    received = 0
    try:
        async with trio.open_nursery() as nursery:
            headers = [(b"authorization", f"Bearer {token}".encode())]
            socket = await wrap_client_stream(nursery, stream, host, resource, extra_headers=headers)
            print(f"stories: listening on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            while count is None or received < count:
                message = await socket.get_message()
                try:
                    line = orjson.dumps(orjson.loads(message)).decode("utf-8")
                except orjson.JSONDecodeError:
                    raise ListenFailed("the server sent a message that is not JSON") from None
                print(line, file=out, flush=True)
                received += 1
            with trio.move_on_after(CLOSE_SECONDS, shield=True):
                await socket.aclose()
            nursery.cancel_scope.cancel("listened")
    except* ConnectionRejected as group:
        raise ListenFailed(f"the server refused the upgrade: {_rejection(_first(group))}") from None
    except* ConnectionClosed as group:
        reason = _first(group).reason
        said = f" ({reason.code} {reason.name}: {reason.reason or ''})" if reason is not None else ""
        raise ListenFailed(f"the server closed the socket{said}") from None
    except* LocalProtocolError:
        # A server ping that crossed our close frame: trio-websocket fails to answer it in the closing state
        # (python-trio/trio-websocket#184). After the last event asked for, that is the end we wanted.
        if count is None or received < count:
            raise
    except* (HandshakeError, OSError) as group:
        raise ListenFailed(f"the connection to {host}:{port} failed ({_first(group)!r})") from None
    finally:
        with trio.move_on_after(CLOSE_SECONDS, shield=True):
            await trio.aclose_forcefully(stream)


def _first(group: BaseExceptionGroup[E]) -> E:
    """The first leaf of a (nested) exception group: the one line worth reporting."""
    error: E | BaseExceptionGroup[E] = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _rejection(rejected: ConnectionRejected) -> str:
    """`401 unauthorized: <message>` from API.md's error body, else the status alone."""
    try:
        body = orjson.loads(rejected.body or b"")
        return f"{rejected.status_code} {body['error']}: {body['message']}"
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return str(rejected.status_code)
