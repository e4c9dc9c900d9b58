"""How a response reaches the socket, on a real hypercorn with the service's configuration: a small response is one
write (hypercorn made three: head, body, and an empty one for the end; bench/floor.md), and holding the head for its
body never holds back anything an app has sent."""

from __future__ import annotations

from functools import partial

import trio
import trio.testing

from stories.api.idle_connections import DrainingTCPServer
from stories.api.server import hypercorn_config
from stories.settings import Settings
from tests.helpers import answer_lifespan, serve_hypercorn

WAIT = 10
BODY = b'{"hello": "world"}'


class _CountingStream:
    """A connection's stream that records every write to the socket."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self.writes: list[bytes] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)

    async def send_all(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        await self._stream.send_all(data)


async def _app(scope, receive, send, *, chunk_read: trio.Event) -> None:
    """`/small`: one body; `/stream`: two chunks, the second once the client has read the first; `/head-only`: a
    head promising a body that never comes (the app ends)."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    if scope["path"] == "/small":
        headers = [(b"content-length", str(len(BODY)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})
    elif scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await chunk_read.wait()
        await send({"type": "http.response.body", "body": b"second"})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})


async def _connect(nursery, chunk_read: trio.Event) -> tuple[trio.SocketStream, DrainingTCPServer]:
    """A connection to `_app` served with the service's configuration, and the server's side of it."""
    config = hypercorn_config(Settings(host="127.0.0.1", port=0))
    port = await serve_hypercorn(partial(_app, chunk_read=chunk_read), config, nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await trio.testing.wait_all_tasks_blocked()  # the server has taken the connection (and registered it)
    (connection,) = config.connections._open
    return stream, connection


async def _read_until(stream: trio.SocketStream, end: bytes) -> bytes:
    answer = b""
    while not answer.endswith(end):
        data = await stream.receive_some()
        assert data, answer
        answer += data
    return answer


async def test_a_small_response_is_one_write(nursery):
    stream, connection = await _connect(nursery, trio.Event())
    counting = connection.stream = _CountingStream(connection.stream)
    with trio.fail_after(WAIT):
        async with stream:
            for _ in range(2):  # and again on the kept-alive connection
                await stream.send_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await _read_until(stream, BODY)
                assert answer.startswith(b"HTTP/1.1 200 ")
    assert len(counting.writes) == 2
    assert all(write.startswith(b"HTTP/1.1 200 ") and write.endswith(BODY) for write in counting.writes)


async def test_each_chunk_of_a_streamed_response_is_sent_when_the_app_sends_it(nursery):
    chunk_read = trio.Event()
    stream, _ = await _connect(nursery, chunk_read)
    with trio.fail_after(WAIT):
        async with stream:
            await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            # The head and the first chunk arrive while the app waits for the client before sending the rest.
            head = await _read_until(stream, b"5\r\nfirst\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            chunk_read.set()
            assert await _read_until(stream, b"0\r\n\r\n") == b"6\r\nsecond\r\n0\r\n\r\n"


async def test_the_head_of_a_response_the_app_abandons_is_sent_before_the_close(nursery):
    stream, _ = await _connect(nursery, trio.Event())
    with trio.fail_after(WAIT):
        async with stream:
            await stream.send_all(b"GET /head-only HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while data := await stream.receive_some():
                answer += data
            # The whole head, then the close (the body it promised is owed, so the connection cannot be reused).
            assert answer.startswith(b"HTTP/1.1 200 \r\ncontent-length: 10\r\n")
            assert answer.endswith(b"\r\n\r\n")
