"""The drain's close of idle keep-alive connections, on a real hypercorn with the service's configuration: it
never discards a request that has reached the socket (issue 16, defect 6; the process-level test is in
tests/test_drain.py)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from stories.api.server import hypercorn_config
from stories.settings import Settings
from tests.helpers import answer_lifespan, serve_hypercorn

WAIT = 10
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _head(stream: trio.SocketStream) -> bytes:
    """The head of one response (the health body is small: it comes with it or just after, and is ignored)."""
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some()
    return answer.partition(b"\r\n\r\n")[0]


async def _idle_keep_alive(port: int) -> tuple[socket.socket, trio.SocketStream]:
    """A connection with one request answered and kept open, once the server has gone idle on it, as a plain
    socket (to send without yielding to the server) and as a trio stream (to read)."""
    plain = socket.create_connection(("127.0.0.1", port))
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(plain))
    await stream.send_all(REQUEST)
    assert (await _head(stream)).startswith(b"HTTP/1.1 200 ")
    # Wait until the server has taken the rest of the answer's body off the wire and gone idle.
    await trio.testing.wait_all_tasks_blocked()
    with trio.move_on_after(0.05):
        while await stream.receive_some():
            pass
    await trio.testing.wait_all_tasks_blocked()
    return plain, stream


@pytest.fixture
async def served(app, settings, nursery):
    """The drain's configuration, and the port of a hypercorn serving the app with it."""
    config = hypercorn_config(settings)
    return config, await serve_hypercorn(app, config, nursery)


async def test_a_request_in_the_socket_keeps_its_connection_open_and_is_answered(served):
    config, port = served
    with trio.fail_after(WAIT):
        plain, stream = await _idle_keep_alive(port)
        async with stream:
            # Sent and closed for with no checkpoint between: the server has not read the request yet.
            plain.sendall(REQUEST)
            assert config.connections.close_idle() == 1
            assert (await _head(stream)).startswith(b"HTTP/1.1 200 ")


async def test_an_idle_connection_with_nothing_received_is_closed(served):
    config, port = served
    with trio.fail_after(WAIT):
        _, stream = await _idle_keep_alive(port)
        async with stream:
            assert config.connections.close_idle() == 0
            # Closed, not reset: the client reads the end.
            assert await stream.receive_some() == b""


async def test_a_connection_its_client_closed_does_not_hold_the_drain(served):
    # Its keep-alive timer still ran (HTTP_KEEP_ALIVE_SECONDS): the drain counted it as receiving a request.
    config, port = served
    with trio.fail_after(WAIT):
        _, stream = await _idle_keep_alive(port)
        await stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert config.connections.close_idle() == 0


# The keep-alive timer (one per connection, reading the clock: bench/floor.md), under trio's MockClock: a raw ASGI
# app whose answer takes as long as the test says, on a real hypercorn with the service's configuration.
KEEP_ALIVE = 5.0
SLOW_REQUEST = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"


async def _timed_app(scope, receive, send) -> None:
    """`GET /slow` answers after three keep-alive timeouts, anything else at once."""
    if scope["type"] == "lifespan":
        await answer_lifespan(receive, send)
        return
    if scope["path"] == "/slow":
        await trio.sleep(3 * KEEP_ALIVE)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _timed_server(nursery) -> trio.SocketStream:
    """A connection to `_timed_app` served with the service's configuration and a keep-alive timeout of KEEP_ALIVE."""
    settings = Settings(host="127.0.0.1", port=0, http_keep_alive_seconds=KEEP_ALIVE, ws_dead_after_seconds=1000)
    port = await serve_hypercorn(_timed_app, hypercorn_config(settings), nursery)
    return await trio.open_tcp_stream("127.0.0.1", port)


async def _answer(stream: trio.SocketStream, request: bytes) -> float:
    """Send `request`, read its whole answer (`ok`); the time it was read."""
    await stream.send_all(request)
    answer = b""
    while not answer.endswith(b"\r\n\r\nok"):
        answer += await stream.receive_some()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    return trio.current_time()


async def _answered_again_then_closed(stream: trio.SocketStream) -> None:
    """Most of a timeout after the last answer, the connection still answers a request; a whole timeout after that
    answer (not before), the server closes it."""
    await trio.sleep(KEEP_ALIVE * 0.8)
    last = await _answer(stream, REQUEST)
    assert await stream.receive_some() == b""
    assert KEEP_ALIVE <= trio.current_time() - last < KEEP_ALIVE + 0.5


async def test_the_keep_alive_timeout_counts_from_the_last_answer(autojump_clock, nursery):
    stream = await _timed_server(nursery)
    async with stream:
        await _answer(stream, REQUEST)
        await _answered_again_then_closed(stream)


async def test_a_request_longer_than_the_keep_alive_timeout_is_answered(autojump_clock, nursery):
    stream = await _timed_server(nursery)
    async with stream:
        sent = trio.current_time()
        answered = await _answer(stream, SLOW_REQUEST)
        assert answered - sent >= 3 * KEEP_ALIVE
        await _answered_again_then_closed(stream)


async def test_a_connection_with_no_request_closes_after_the_keep_alive_timeout(autojump_clock, nursery):
    stream = await _timed_server(nursery)
    async with stream:
        opened = trio.current_time()
        assert await stream.receive_some() == b""
        assert KEEP_ALIVE <= trio.current_time() - opened < KEEP_ALIVE + 0.5
