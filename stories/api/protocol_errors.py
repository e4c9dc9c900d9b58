"""API.md's error body on the answers hypercorn writes itself, before any request reaches the app.

A request whose head cannot be parsed (400) or does not fit in `h11_max_incomplete_size` (431) is refused by
hypercorn's HTTP/1.1 protocol with an empty body and no `X-Request-ID`, so a client sees no `{"error",
"message"}` and the logs have no line to match. Hypercorn has no hook for these answers: its connection
wrapper builds `H11Protocol` by name, so `install()` puts a subclass under that name whose refusals carry the
documented body, a fresh request id, and one log line.

It also enforces the 64 KiB limit on the head itself: h11 refuses only a head it is still waiting for once its
buffer exceeds the limit, so a head that arrives whole in two reads of the socket (up to about 128 KiB) got
through. A parsed head over the limit is refused the same way.

And it makes the keep-alive timeout (HTTP_KEEP_ALIVE_SECONDS) work: hypercorn 0.18 starts a connection's idle
timer when a response has been sent, from the app's task, which quart-trio has cancelled by then, so the timer
never started and an idle connection lived until the read timeout (WS_DEAD_AFTER_SECONDS).

And it keeps the drain from dropping requests (with idle_connections.py): once the server has stopped accepting
(hypercorn's `terminated`, set after its listeners are closed), every response says `Connection: close`; and a
response that went out before without it still leaves its connection open for the next request, which is then
answered (and closes it), where hypercorn closed it under a client that had no way to know.

And it writes a small response to the socket once: hypercorn writes the head, the body and the (empty) end of a
body of known length separately, each write with its lock, shield and scheduler pass. The head waits for the
first body bytes the app sends (ASGI lets a server hold it that long); every body chunk goes out when sent.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from itertools import chain
from typing import TYPE_CHECKING, Any

import h11
import hypercorn.protocol
import structlog
import trio
from hypercorn.events import Closed, Event, RawData, Updated
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.events import Response
from hypercorn.protocol.h11 import H11Protocol

if TYPE_CHECKING:
    from hypercorn.typing import H11SendableEvent

__all__ = ["install"]

log = structlog.get_logger()

_ERRORS = {
    400: ("invalid_request", "the request line or headers could not be parsed"),
    431: ("headers_too_large", "the request line and headers must fit in 64 KiB"),
}


def error_body(status: int) -> tuple[str, bytes]:
    """The (error code, JSON body) hypercorn's refusal with `status` carries."""
    error, message = _ERRORS.get(status, ("invalid_request", "the request could not be read"))
    return error, json.dumps({"error": error, "message": message}).encode()


def head_size(request: h11.Request) -> int:
    """The bytes of `request`'s request line and headers, as sent less any optional whitespace h11 trimmed."""
    line = len(request.method) + len(request.target) + len(b"  HTTP/1.1\r\n")
    fields = sum(len(name) + len(value) + len(b": \r\n") for name, value in request.headers.raw_items())
    return line + fields + len(b"\r\n")


# Bounds the shielded recycling of a connection between requests (a few scheduler ticks normally).
RECYCLE_SECONDS = 1.0


class _JsonErrorsH11Protocol(H11Protocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A response's head is held until its first body bytes (or the end) and written with them: one write of
        # the socket per small response where hypercorn makes three (head, body, and the empty end of a body of
        # known length), each with its lock, shield and checkpoint (bench/floor.md).
        self._write = self.send
        self.send = self._send_coalesced
        self._holding_head = False
        self._head = b""

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        self._holding_head = isinstance(event, h11.Response)
        try:
            await super()._send_h11_event(event)
        finally:
            self._holding_head = False

    async def _send_coalesced(self, event: Event) -> None:
        if not isinstance(event, RawData):
            await self._flush_head()  # a close (or an idle change) goes after the head, as it did
            await self._write(event)
        elif self._holding_head:
            self._head += event.data
        elif self._head or event.data:  # an empty write (a body's end when its length was given) is none
            data, self._head = self._head + event.data, b""
            await self._write(RawData(data=data))

    async def _flush_head(self) -> None:
        if self._head:
            data, self._head = self._head, b""
            await self._write(RawData(data=data))

    async def _maybe_recycle(self) -> None:
        connection = self.connection
        if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
            # Not a keep-alive cycle (a response sent before the whole request was read, a closing one): as
            # hypercorn does it.
            await super()._maybe_recycle()
            return
        # The connection goes back to idle: cleanup after the response, hence the shield (with a deadline):
        # unshielded, the cancelled app task that runs it loses the start of the keep-alive timer.
        with trio.move_on_after(RECYCLE_SECONDS, shield=True):
            await self._recycle()

    async def _recycle(self) -> None:
        # Hypercorn's recycling, also once the server stops: the response did not say `Connection: close`, so
        # the client may be sending its next request already; it is answered (and told to close) instead of
        # being cut off. The drain closes the connection if none comes (idle_connections.py).
        await self._close_stream()
        try:
            self.connection.start_next_cycle()
        except h11.LocalProtocolError:
            await self.send(Closed())
            return
        await self.can_read.set()
        await self.send(Updated(idle=True))

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, Response) and event.status_code >= 200 and self.context.terminated.is_set():
            # Hypercorn's own way to end a keep-alive connection (as at keep_alive_max_requests). Not before
            # `terminated`: its listeners are closed by then, so a client told to go cannot reconnect into a
            # listen queue about to be discarded with its request.
            headers = [(name, value) for name, value in event.headers if name.lower() != b"connection"]
            event = replace(event, headers=[*headers, (b"connection", b"close")])
        await super().stream_send(event)

    async def _create_stream(self, request: h11.Request) -> None:
        if head_size(request) > self.config.h11_max_incomplete_size:
            # As hypercorn does for a head h11 refuses: answer, then close. With no stream, the events that
            # follow on this connection (the body, if any) are dropped.
            await self._send_error_response(431)
            await self.send(Closed())
            return
        await super()._create_stream(request)

    async def _send_error_response(self, status_code: int) -> None:
        error, body = error_body(status_code)
        request_id = uuid.uuid4().hex
        log.info("http.refused", status=status_code, error=error, request_id=request_id, client=self.client)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]
        response = h11.Response(
            status_code=status_code, headers=list(chain(headers, self.config.response_headers("h11")))
        )
        await self._send_h11_event(response)
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


def install() -> None:
    """Make hypercorn's HTTP/1.1 refusals carry API.md's error body (idempotent)."""
    hypercorn.protocol.H11Protocol = _JsonErrorsH11Protocol  # type: ignore[attr-defined]
