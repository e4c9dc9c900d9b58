"""bench/chaos.py's reconnecting sockets, without servers: how a socket's end is counted."""

from __future__ import annotations

from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
import trio
from trio_websocket import CloseReason, ConnectionClosed

from bench import chaos
from tests.processes import Account


def _sockets_that_close(reasons, done: trio.Event):
    """An open_ws whose sockets end at once, with these close reasons in turn; then one that sets `done` and waits."""
    left = list(reasons)

    @asynccontextmanager
    async def open_ws(port, path):
        if not left:
            done.set()
            await trio.sleep_forever()
        raise ConnectionClosed(left.pop(0))
        yield

    return open_ws


async def _ends(monkeypatch: pytest.MonkeyPatch, reasons) -> dict[str, int]:
    done = trio.Event()
    monkeypatch.setattr(chaos, "open_ws", _sockets_that_close(reasons, done))
    monkeypatch.setattr(chaos, "RECONNECT_SECONDS", 0)
    soak = SimpleNamespace(pick=lambda: SimpleNamespace(port=1), report=chaos.Report())
    inbox = chaos.Inbox(Account("user", "token"), first="0")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(chaos.Soak.listen, soak, inbox)
            await done.wait()
            nursery.cancel_scope.cancel()
    assert not soak.report.failures
    return dict(inbox.ends)


async def test_a_socket_that_ends_without_a_close_reason_is_counted_and_the_author_reconnects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # trio-websocket's ConnectionClosed.reason is None when the connection ends before a close was recorded.
    ends = await _ends(monkeypatch, [CloseReason(1012, "restart"), None, CloseReason(1001, None)])
    assert ends == {"1012": 1, "no close reason": 1, "1001": 1}
