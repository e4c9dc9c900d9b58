"""GET /ws on a real hypercorn (port 0) with trio-websocket clients.

The app here is a StoriesApp (which routes /ws itself) with no blueprint and a stand-in deps object (tokens,
hub, metrics, and a log that replays nothing): the live path needs neither the database nor the rest of the
API. Catch-up with `after` is tested against the real log in test_ws_catch_up.py.
"""

from __future__ import annotations

import base64
import itertools
import os
import re
import uuid
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import orjson
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from stories.actors.hub import CloseReason, Hub
from stories.api.app import StoriesApp
from stories.api.authentication import Callers
from stories.api.ws import configure_websockets
from stories.clock import FixedClock
from stories.domain import EventId
from stories.errors import StoreUnavailable
from stories.events import StoryReacted, StoryViewed
from stories.metrics import Metrics
from stories.security import TokenIssuer
from stories.settings import Settings
from stories.store.events import ReplayPage
from tests.helpers import open_ws

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable

SECRET = "ws-test-secret-0123456789abcdef-0123456789"
NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
WAIT = 10.0
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


class EveryoneExists:
    async def user_states(self, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
        return dict.fromkeys(user_ids, False)


class EveryoneSuspended:
    async def user_states(self, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
        return dict.fromkeys(user_ids, True)


class StoreDown:
    async def user_states(self, user_ids: set[uuid.UUID]) -> dict[uuid.UUID, bool]:
        raise StoreUnavailable("the database is unreachable")


class EmptyLog:
    async def position(self) -> EventId:
        return EventId(0, 0)

    async def replay(self, author_id, after, limit, since, *, vouched=False, settle=False) -> ReplayPage:
        return ReplayPage([], more=False, stale=False, horizon=0, next_xid=0)


@dataclass
class RealtimeStandIn:
    tokens: TokenIssuer
    hub: Hub
    metrics: Metrics
    clock: FixedClock
    events: EmptyLog
    users: EveryoneExists | EveryoneSuspended | StoreDown = field(default_factory=EveryoneExists)
    # The upgrade's deadline is REQUEST_TIMEOUT_SECONDS.
    settings: Settings = field(default_factory=Settings)

    @property
    def callers(self) -> Callers:
        return Callers(self.tokens, self.users)


@dataclass
class Server:
    url: str
    deps: RealtimeStandIn
    port: int

    def token(self, user_id: uuid.UUID) -> str:
        return self.deps.tokens.issue(user_id, uuid.uuid4())

    def sample(self, name: str) -> float | None:
        return self.deps.metrics.registry.get_sample_value(name)


@asynccontextmanager
async def running(
    *, ping_interval: float | None = None, dead_after: float = 1.0, token_seconds: int = 3600
) -> AsyncIterator[Server]:
    metrics = Metrics()
    clock = FixedClock(NOW)
    stand_in = RealtimeStandIn(TokenIssuer(SECRET, token_seconds, clock), Hub(metrics), metrics, clock, EmptyLog())
    app = StoriesApp(__name__)
    app.deps = stand_in  # type: ignore[assignment]
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    configure_websockets(config, ping_interval=ping_interval or 20, dead_after=dead_after if ping_interval else 60)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(serve, app, config, shutdown_trigger=shutdown.wait))
        port = int(binds[0].rsplit(":", 1)[1])
        yield Server(f"ws://127.0.0.1:{port}/ws", stand_in, port)
        shutdown.set()


def open_socket(
    server: Server, query: str = "", headers: list[tuple[str, str]] | None = None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    return open_ws(server.port, "/ws" + query, headers)


async def refused(server: Server, query: str, headers: list[tuple[str, str]] | None = None) -> ConnectionRejected:
    """The rejection of an upgrade that must be refused (raised from inside the client's nursery)."""
    with trio.fail_after(WAIT), pytest.RaisesGroup(ConnectionRejected, flatten_subgroups=True) as group:
        async with open_socket(server, query, headers):
            pytest.fail("the upgrade was accepted")
    leaf: BaseException = group.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, ConnectionRejected)
    return leaf


_ids = itertools.count(1)


def viewed(author_id: uuid.UUID) -> StoryViewed:
    return StoryViewed(
        EventId(10, next(_ids)), author_id=author_id, story_id=uuid.uuid4(), viewer_id=uuid.uuid4(), viewed_at=NOW
    )


async def connected(server: Server, count: int) -> None:
    """Wait until the server has registered `count` sockets (the handler subscribes right after accept)."""
    with trio.fail_after(WAIT):
        while server.deps.hub.stats().connections != count:
            await trio.testing.wait_all_tasks_blocked()
            if server.deps.hub.stats().connections != count:
                await trio.sleep(0.01)


@pytest.mark.parametrize(
    ("query", "headers", "message"),
    [
        ("", [], "missing token"),
        ("?token=not-a-jwt", [], "malformed"),
        ("", [("Authorization", "Basic dXNlcjpwYXNz")], "Bearer"),
        (
            "?token="
            + TokenIssuer("another-secret-0123456789abcdef-0123", 60, FixedClock(NOW)).issue(
                uuid.uuid4(), uuid.uuid4()
            ),
            [],
            "signature",
        ),
    ],
)
async def test_bad_or_missing_token_is_refused_with_401_before_the_upgrade(
    query: str, headers: list[tuple[str, str]], message: str
) -> None:
    async with running() as server:
        rejected = await refused(server, query, headers)
        assert rejected.status_code == 401
        body = orjson.loads(rejected.body)
        assert body["error"] == "unauthorized"
        assert message in body["message"]
        assert dict(rejected.headers)[b"content-type"] == b"application/json; charset=utf-8"
        assert server.deps.hub.stats().connections == 0


async def test_expired_token_is_refused() -> None:
    async with running() as server:
        expired = TokenIssuer(SECRET, 60, FixedClock(datetime(2026, 1, 1, tzinfo=UTC))).issue(
            uuid.uuid4(), uuid.uuid4()
        )
        rejected = await refused(server, f"?token={expired}")
        assert rejected.status_code == 401
        assert b"expired" in rejected.body


async def test_a_store_outage_during_the_upgrade_is_refused_with_503_and_the_error_body() -> None:
    async with running() as server:
        server.deps.users = StoreDown()
        rejected = await refused(server, f"?token={server.token(uuid.uuid4())}")
        assert rejected.status_code == 503
        assert orjson.loads(rejected.body)["error"] == "database_unavailable"


async def test_events_reach_every_socket_of_the_author_and_nobody_else() -> None:
    async with running() as server:
        author, other = uuid.uuid4(), uuid.uuid4()
        bearer = [("Authorization", f"Bearer {server.token(author)}")]
        with trio.fail_after(WAIT):
            async with (
                open_socket(server, headers=bearer) as by_header,
                open_socket(server, f"?token={server.token(author)}") as by_query,
                open_socket(server, f"?token={server.token(other)}") as bystander,
            ):
                await connected(server, 3)
                assert server.sample("ws_connections") == 3
                event = StoryReacted(
                    EventId(10, next(_ids)),
                    author_id=author,
                    story_id=uuid.uuid4(),
                    user_id=other,
                    emoji="🔥",
                    created_at=NOW,
                )
                assert server.deps.hub.publish(event) == 2
                for socket in (by_header, by_query):
                    assert orjson.loads(await socket.get_message()) == {
                        "type": "story.reacted",
                        "id": str(event.id),
                        "payload": {
                            "story_id": str(event.story_id),
                            "user_id": str(other),
                            "emoji": "🔥",
                            "created_at": "2026-11-24T10:00:00.000Z",
                        },
                    }
                # Client messages are not part of the API; they are read and ignored.
                await bystander.send_message("hello?")
                follow_up = viewed(other)
                server.deps.hub.publish(follow_up)
                assert orjson.loads(await bystander.get_message())["id"] == str(follow_up.id)
                assert server.sample("ws_events_sent_total") == 3
        await connected(server, 0)
        assert server.sample("ws_connections") == 0


async def test_shutdown_closes_sockets_with_1001() -> None:
    async with running() as server:
        author = uuid.uuid4()
        shutdown = trio.Event()
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.deps.hub.close_all_on, shutdown)
                async with open_socket(server, f"?token={server.token(author)}") as socket:
                    await connected(server, 1)
                    # An event already in the mailbox is delivered before the close.
                    event = viewed(author)
                    server.deps.hub.publish(event)
                    shutdown.set()
                    assert orjson.loads(await socket.get_message())["id"] == str(event.id)
                    with pytest.raises(ConnectionClosed) as closed:
                        await socket.get_message()
                    assert closed.value.reason.code == 1001
            await connected(server, 0)
            # A socket opened during shutdown is closed at once.
            async with open_socket(server, f"?token={server.token(author)}") as late:
                with pytest.raises(ConnectionClosed) as closed:
                    await late.get_message()
                assert closed.value.reason.code == 1001


@pytest.mark.parametrize("after", ["yesterday", "f" * 32])
async def test_a_malformed_after_is_refused_with_400_before_the_upgrade(after: str) -> None:
    async with running() as server:
        rejected = await refused(server, f"?token={server.token(uuid.uuid4())}&after={after}")
        assert rejected.status_code == 400
        body = orjson.loads(rejected.body)
        assert body["error"] == "invalid_request"
        assert "after" in body["fields"]


async def test_an_expiring_token_closes_its_socket_with_1008() -> None:
    async with running(token_seconds=1) as server:
        with trio.fail_after(WAIT):
            # The server counts the token's second from the upgrade, which comes after this: on a loaded machine
            # only the close can come late (the fail_after above is the only upper bound, against a hang).
            began = trio.current_time()
            async with open_socket(server, f"?token={server.token(uuid.uuid4())}") as socket:
                await connected(server, 1)
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.get_message()
                assert closed.value.reason.code == 1008
                assert "expired" in closed.value.reason.reason
                assert trio.current_time() - began >= 0.9


async def test_a_client_message_over_4_kib_closes_the_socket_with_1009() -> None:
    async with running() as server:
        author = uuid.uuid4()
        with trio.fail_after(WAIT):
            async with open_socket(server, f"?token={server.token(author)}") as socket:
                await connected(server, 1)
                await socket.send_message("x" * 4096)  # at the cap: read and ignored
                event = viewed(author)
                server.deps.hub.publish(event)
                assert orjson.loads(await socket.get_message())["id"] == str(event.id)
                await socket.send_message("x" * 4097)
                with pytest.raises(ConnectionClosed) as closed:
                    await socket.get_message()
                assert closed.value.reason.code == 1009


async def test_an_eleventh_socket_closes_the_users_oldest_with_1008() -> None:
    async with running() as server:
        author = uuid.uuid4()
        with trio.fail_after(WAIT):
            async with AsyncExitStack() as stack:
                sockets = [
                    await stack.enter_async_context(open_socket(server, f"?token={server.token(author)}"))
                    for _ in range(10)
                ]
                await connected(server, 10)
                await stack.enter_async_context(open_socket(server, f"?token={server.token(author)}"))
                with pytest.raises(ConnectionClosed) as closed:
                    await sockets[0].get_message()
                assert closed.value.reason.code == 1008
                await connected(server, 10)
                event = viewed(author)
                assert server.deps.hub.publish(event) == 10


async def test_live_client_answers_pings_and_a_silent_one_is_dropped() -> None:
    """The server pings every 0.2 s and drops a connection silent for 1 s. trio-websocket answers pings on
    its own; the raw client below completes the handshake and then never reads nor writes again."""
    async with running(ping_interval=0.2, dead_after=1) as server:
        author = uuid.uuid4()
        with trio.fail_after(WAIT):
            async with open_socket(server, f"?token={server.token(author)}") as live:
                # Before the silence starts (the upgrade request is the last the server hears of it): measured
                # from later, a slow machine would shrink the silence the server saw before dropping it.
                began = trio.current_time()
                silent = await raw_upgrade(server, author)
                await connected(server, 2)
                await connected(server, 1)
                assert trio.current_time() - began >= 0.5
                # The live socket outlived the dead one and still gets its events.
                await trio.sleep(1.2)
                event = viewed(author)
                assert server.deps.hub.publish(event) == 1
                assert orjson.loads(await live.get_message())["id"] == str(event.id)
                # The server ends the live socket: a trio-websocket client that closes first can receive one of
                # the 0.2 s pings while closing and crash answering it (python-trio/trio-websocket#184).
                server.deps.hub.close_all(CloseReason.SHUTDOWN)
                with pytest.raises(ConnectionClosed):
                    await live.get_message()
                await silent.aclose()


async def raw_upgrade(server: Server, user_id: uuid.UUID) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    request = (
        f"GET /ws?token={server.token(user_id)} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode("ascii"))
    response = b""
    while b"\r\n\r\n" not in response:
        response += await stream.receive_some(4096)
    assert response.startswith(b"HTTP/1.1 101")
    return stream


# --- X-Request-ID (API.md, Conventions: every response carries it) ------------------------------------------


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The X-Request-ID among an upgrade answer's headers, "" when there is none."""
    ids = [value.decode() for name, value in headers if name.lower() == b"x-request-id"]
    assert len(ids) <= 1, ids
    return ids[0] if ids else ""


async def test_a_refused_upgrade_echoes_a_sane_request_id_and_logs_it(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    async with running() as server:
        rejected = await refused(server, "", [("X-Request-ID", "abc123")])
    assert rejected.status_code == 401
    assert request_id_of(rejected.headers) == "abc123"
    refusals = [line for line in log_lines() if line["event"] == "ws.refused"]
    assert [line["request_id"] for line in refusals] == ["abc123"]


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, "a/b"])
async def test_a_refused_upgrade_without_a_sane_request_id_gets_a_generated_one(sent: str | None) -> None:
    headers = [] if sent is None else [("X-Request-ID", sent)]
    async with running() as server:
        first = await refused(server, "", headers)
        second = await refused(server, "", headers)
    assert first.status_code == second.status_code == 401
    first_id, second_id = request_id_of(first.headers), request_id_of(second.headers)
    assert GENERATED_ID.match(first_id)
    assert GENERATED_ID.match(second_id)
    assert first_id != second_id


async def test_every_kind_of_refusal_carries_the_request_id() -> None:
    sent = [("X-Request-ID", "trace:1.2_x")]
    async with running() as server:
        token = f"?token={server.token(uuid.uuid4())}"
        bad_after = await refused(server, f"{token}&after=yesterday", sent)
        assert (bad_after.status_code, request_id_of(bad_after.headers)) == (400, "trace:1.2_x")
        server.deps.users = EveryoneSuspended()
        suspended = await refused(server, token, sent)
        assert (suspended.status_code, request_id_of(suspended.headers)) == (403, "trace:1.2_x")
        server.deps.users = StoreDown()
        outage = await refused(server, token, sent)
        assert (outage.status_code, request_id_of(outage.headers)) == (503, "trace:1.2_x")


async def test_the_accepted_upgrade_carries_the_request_id_and_its_log_lines_name_it(
    log_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    async with running() as server:
        token = f"?token={server.token(uuid.uuid4())}"
        with trio.fail_after(WAIT):
            async with (
                open_socket(server, token, [("X-Request-ID", "abc123")]) as named,
                open_socket(server, token) as unnamed,
            ):
                # trio-websocket keeps the 101's headers other than the handshake's own.
                assert request_id_of(named.handshake_headers) == "abc123"
                assert GENERATED_ID.match(request_id_of(unnamed.handshake_headers))
                await connected(server, 2)
                # The server closes first (trio-websocket#184: see test_live_client_answers_pings...).
                server.deps.hub.close_all(CloseReason.SHUTDOWN)
                for socket in (named, unnamed):
                    with pytest.raises(ConnectionClosed):
                        await socket.get_message()
            await connected(server, 0)
    named_lines = [line["event"] for line in log_lines() if line.get("request_id") == "abc123"]
    assert sorted(named_lines) == ["ws.connected", "ws.disconnected"]
