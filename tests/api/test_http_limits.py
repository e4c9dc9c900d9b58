"""The HTTP server's own limits, on a real hypercorn with the service's configuration: the 64 KiB head."""

from __future__ import annotations

import dataclasses
import json

import pytest
import trio

from stories.api.server import hypercorn_config
from tests.helpers import serve_hypercorn

WAIT = 10


async def _serve(app, settings, nursery) -> int:
    return await serve_hypercorn(app, hypercorn_config(settings), nursery)


async def _exchange(port: int, raw: bytes) -> tuple[bytes, bytes]:
    """Send `raw` and read one response: (head, body)."""
    with trio.fail_after(WAIT):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            await stream.send_all(raw)
            return await _response(stream)


async def _response(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += await stream.receive_some()
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        body += await stream.receive_some()
    return head, body


@pytest.mark.parametrize("size", [66_000, 100_000, 127_000])
async def test_a_whole_head_over_64_kib_is_refused_with_431(app, settings, nursery, size):
    # Sent whole: h11 refused only a head it was still waiting for, so up to ~128 KiB answered 200.
    port = await _serve(app, settings, nursery)
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\nConnection: close\r\n\r\n"
    head, body = await _exchange(port, raw)
    assert head.startswith(b"HTTP/1.1 431 "), head[:100]
    assert json.loads(body)["error"] == "headers_too_large"


async def test_a_head_within_64_kib_is_served(app, settings, nursery):
    port = await _serve(app, settings, nursery)
    raw = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 60_000 + b"\r\nConnection: close\r\n\r\n"
    head, _ = await _exchange(port, raw)
    assert head.startswith(b"HTTP/1.1 200 ")


async def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(app, settings, nursery):
    # It lived WS_DEAD_AFTER_SECONDS (hypercorn's read timeout): its own keep-alive timer never started.
    settings = dataclasses.replace(settings, http_keep_alive_seconds=1.0, ws_dead_after_seconds=60.0)
    port = await _serve(app, settings, nursery)
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        with trio.fail_after(WAIT):
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _ = await _response(stream)
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"connection: close" not in head.lower()
            # Well before the read timeout (60 s), the server closes the idle connection.
            assert await stream.receive_some() == b""
