"""The SIGTERM drain of a real `stories serve`: it ends as soon as nothing is in flight, every response sent
while draining closes its connection, an in-flight request still completes, every request sent on a keep-alive
connection is answered, and no keep-alive client is left waiting; and a port or address that cannot be bound
stops the start with one line naming PORT or HOST."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime

import h11
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from stories.store.bridge import Bridge
from tests.conftest import TEST_JWT_SECRET
from tests.helpers import PASSWORD
from tests.processes import (
    ServerProcess,
    open_socket,
    serve_until_exit,
    signup,
    stories_serve,
    wait_for_connections,
)
from tests.sql import SqlConnection, connect_sql

# Long, so that waiting for it (the old behaviour) cannot pass for draining early.
DRAIN_SECONDS = 10.0
# With nothing in flight, the drain (logged, checked apart) and the exit (mostly the interpreter's own teardown
# after `shutdown.complete`, about 1 s on a loaded machine) come "at once": told apart from waiting for
# DRAIN_SECONDS with half of it to spare, room for a loaded machine and none for the old behaviour.
EXIT_LIMIT_SECONDS = DRAIN_SECONDS / 2
DRAIN_LIMIT_SECONDS = DRAIN_SECONDS / 2
WAIT = 15.0
SLOW_REQUESTS = 3
POLL_SECONDS = 0.02
LOOPING_CLIENTS = 32
# Answers before the signal, so that it comes while every client is mid-loop.
ANSWERS_BEFORE_SIGNAL = LOOPING_CLIENTS * 20


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]

    @property
    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()


class KeepAlive:
    """One raw HTTP/1.1 client connection, reused request after request (no pool hides what the server does)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.http = h11.Connection(h11.CLIENT)

    async def get(self, path: str) -> Answer | None:
        """The answer to `GET path`, or None when the server closed the connection without one."""
        request = h11.Request(method="GET", target=path, headers=[("Host", "127.0.0.1")])
        try:
            await self.stream.send_all(self.http.send(request) + self.http.send(h11.EndOfMessage()))
            answer: Answer | None = None
            while True:
                event = self.http.next_event()
                if event is h11.NEED_DATA:
                    self.http.receive_data(await self.stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    headers = {name.decode(): value.decode() for name, value in event.headers}
                    answer = Answer(event.status_code, headers)
                elif isinstance(event, h11.EndOfMessage):
                    assert answer is not None
                    if self.http.our_state is h11.DONE and self.http.their_state is h11.DONE:
                        self.http.start_next_cycle()
                    return answer
        except (h11.RemoteProtocolError, trio.BrokenResourceError):
            return None

    async def closed_by_server(self) -> bool:
        """Whether the server ends the connection (EOF or reset) rather than leave it open."""
        try:
            return await self.stream.receive_some(65536) == b""
        except trio.BrokenResourceError:
            return True


async def open_keep_alive(server: ServerProcess, count: int, stack: ExitStack) -> list[KeepAlive]:
    """`count` connections, each with one answered request and kept open (closed by `stack`, synchronously)."""
    connections = []
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        stack.callback(stream.socket.close)
        connection = KeepAlive(stream)
        answer = await connection.get("/healthz")
        assert answer is not None
        assert answer.status == 200
        assert not answer.closes, answer.headers
        connections.append(connection)
    return connections


async def refuses_connections(port: int) -> bool:
    with trio.socket.socket() as probe:
        try:
            await probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


def drain_seconds(server: ServerProcess) -> float:
    """From the signal to the end of the HTTP drain, by the process's own clock."""
    (requested,) = server.logged("shutdown.requested")
    (drained,) = server.logged("http.drained")
    return (
        datetime.fromisoformat(drained["timestamp"]) - datetime.fromisoformat(requested["timestamp"])
    ).total_seconds()


async def test_idle_keep_alive_connections_end_the_drain_at_once_and_are_closed(database_url, tmp_path):
    with ExitStack() as stack:
        async with stories_serve(database_url, tmp_path, DRAIN_SECONDS=str(DRAIN_SECONDS)) as server:
            with trio.fail_after(WAIT):
                connections = await open_keep_alive(server, 32, stack)
            elapsed = await server.stop(signal.SIGTERM)
        with trio.fail_after(WAIT):
            for connection in connections:
                # Closed, not stranded: a request on it now fails at once instead of waiting for nothing.
                assert await connection.closed_by_server()
    assert server.process.returncode == 0, server.describe()
    assert drain_seconds(server) < DRAIN_LIMIT_SECONDS, server.describe()
    assert elapsed < EXIT_LIMIT_SECONDS, server.describe()
    assert not server.logged("http.drain_deadline")
    assert "Traceback" not in server.stderr(), server.describe()


@dataclass
class Tally:
    """What the looping clients saw: a request counts as sent once all its bytes went out."""

    sent: int = 0
    answered: int = 0
    # Sent, and the connection ended without an answer: what the drain must never do.
    dropped: int = 0
    # Not sent, and the client knew why: the connection was closed before it sent, or told to close, or refused.
    unsent: int = 0
    closing_answers: int = 0
    # Set once ANSWERS_BEFORE_SIGNAL answers came.
    warm: trio.Event = field(default_factory=trio.Event)

    def answer(self) -> None:
        self.answered += 1
        if self.answered >= ANSWERS_BEFORE_SIGNAL:
            self.warm.set()


def closed_before_sending(stream: trio.SocketStream) -> bool:
    """Whether the server has already ended `stream` (EOF or reset waiting to be read): a client checks this
    before it reuses a keep-alive connection, so a request it then sends was sent on a connection it believed open.
    """
    descriptor = stream.socket.fileno()
    readable, _, _ = select.select([descriptor], [], [], 0)
    if not readable:
        return False
    # A duplicate of the descriptor: trio's socket has no synchronous peek.
    with socket.fromfd(descriptor, socket.AF_INET, socket.SOCK_STREAM) as duplicate:
        try:
            peeked = duplicate.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return True
    assert peeked == b"", f"the server sent {peeked!r} on an idle connection"
    return True


async def loop_requests(port: int, tally: Tally) -> None:
    """GET /healthz again and again on one keep-alive connection, reconnecting when told to close, until the
    server ends the connection before a request or refuses a new one."""
    stream: trio.SocketStream | None = None
    http = h11.Connection(h11.CLIENT)
    try:
        while True:
            if stream is None:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    tally.unsent += 1
                    return
                http = h11.Connection(h11.CLIENT)
            elif closed_before_sending(stream):
                tally.unsent += 1
                return
            request = http.send(h11.Request(method="GET", target="/healthz", headers=[("Host", "127.0.0.1")]))
            try:
                await stream.send_all(request + http.send(h11.EndOfMessage()))
            except trio.BrokenResourceError:
                # Reset before the request went out: the server had closed the connection already.
                tally.unsent += 1
                return
            tally.sent += 1
            closes = False
            try:
                while True:
                    event = http.next_event()
                    if event is h11.NEED_DATA:
                        http.receive_data(await stream.receive_some(65536))
                    elif isinstance(event, h11.Response):
                        closes = any(name == b"connection" and b"close" in value for name, value in event.headers)
                    elif isinstance(event, h11.EndOfMessage):
                        break
            except (h11.RemoteProtocolError, trio.BrokenResourceError):
                tally.dropped += 1
                return
            tally.answer()
            if closes:
                tally.closing_answers += 1
                await stream.aclose()
                stream = None
            else:
                http.start_next_cycle()
    finally:
        if stream is not None:
            await stream.aclose()


async def test_every_request_sent_on_a_keep_alive_connection_is_answered_through_the_drain(database_url, tmp_path):
    """Keep-alive clients in a loop through a SIGTERM: a request the server may have read is always answered
    (with `Connection: close` while draining); a client only stops on a connection it can tell is gone."""
    tally = Tally()
    async with stories_serve(database_url, tmp_path, DRAIN_SECONDS=str(DRAIN_SECONDS)) as server:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                for _ in range(LOOPING_CLIENTS):
                    nursery.start_soon(loop_requests, server.port, tally)
                await tally.warm.wait()
                server.process.send_signal(signal.SIGTERM)
            await server.process.wait()
    assert tally.dropped == 0, (tally, server.describe())
    assert tally.sent == tally.answered, tally
    # Every client ended by learning that the server was going (and none was stranded).
    assert tally.unsent == LOOPING_CLIENTS, tally
    assert tally.closing_answers >= 1, tally
    assert server.process.returncode == 0, server.describe()
    assert not server.logged("http.drain_deadline")
    assert "Traceback" not in server.stderr(), server.describe()


async def admin_connection(bridge: Bridge, database_url: str) -> SqlConnection:
    return await connect_sql(bridge, database_url)


async def wait_until_blocked_on_a_lock(admin: SqlConnection, count: int) -> None:
    query = """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO users%'"""
    while True:
        # Inside a transaction the activity view is a snapshot taken at first use: refresh it each time.
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        if await admin.fetchval(query) >= count:
            return
        await trio.sleep(POLL_SECONDS)


async def test_responses_while_draining_close_their_connection_and_the_in_flight_request_completes(
    bridge, database_url, tmp_path
):
    answers: list[httpx.Response] = []
    with ExitStack() as stack:
        async with (
            stories_serve(database_url, tmp_path, DRAIN_SECONDS=str(DRAIN_SECONDS)) as server,
            httpx.AsyncClient(timeout=WAIT) as http,
        ):
            with trio.fail_after(WAIT):
                connections = await open_keep_alive(server, 8, stack)
            # A signup waiting on a table lock is provably in flight, inside the app, when the signal comes.
            admin = await admin_connection(bridge, database_url)
            try:
                await admin.execute("BEGIN")
                await admin.execute("LOCK TABLE users IN EXCLUSIVE MODE")

                async def slow_signup() -> None:
                    email = f"drain-{uuid.uuid4().hex[:8]}@example.com"
                    answers.append(
                        await http.post(f"{server.base_url}/signup", json={"email": email, "password": PASSWORD})
                    )

                async with trio.open_nursery() as nursery:
                    for _ in range(SLOW_REQUESTS):
                        nursery.start_soon(slow_signup)
                    with trio.fail_after(WAIT):
                        await wait_until_blocked_on_a_lock(admin, SLOW_REQUESTS)
                    server.process.send_signal(signal.SIGTERM)
                    signalled = trio.current_time()
                    with trio.fail_after(WAIT):
                        await server.wait_for("shutdown.requested")
                        # A kept-alive connection is never left open without a word, nor closed under a
                        # request: a request on it is answered and told to go (one answered in the moment
                        # before the listeners closed stays kept alive: the next one is told), then it closes.
                        for connection in connections:
                            answer = await connection.get("/healthz")
                            while answer is not None and answer.status == 200 and not answer.closes:
                                answer = await connection.get("/healthz")
                            assert answer is not None
                            assert answer.status == 200
                            assert answer.closes
                            assert await connection.closed_by_server()
                        # No new connection is accepted.
                        assert await refuses_connections(server.port)
                    await admin.execute("ROLLBACK")
                released = trio.current_time()
            finally:
                await admin.close()
            with trio.fail_after(WAIT):
                await server.process.wait()
            exited = trio.current_time()
    assert server.process.returncode == 0, server.describe()
    # Started before the signal, answered while draining: completed, and told not to come back.
    assert len(answers) == SLOW_REQUESTS
    for answer in answers:
        assert answer.status_code == 201, answer.text
        assert answer.headers["Connection"] == "close"
    assert exited - released < EXIT_LIMIT_SECONDS, server.describe()
    assert exited - signalled < DRAIN_SECONDS, server.describe()
    assert not server.logged("http.drain_deadline")
    events = [line.get("event") for line in server.lines()]
    assert events.index("shutdown.requested") < events.index("auth") < events.index("http.drained")
    assert "Traceback" not in server.stderr(), server.describe()


async def test_websockets_close_with_1001_and_do_not_hold_the_drain(database_url, tmp_path):
    codes: list[int] = []

    async def hold(server: ServerProcess, token: str, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with open_socket(server, token) as ws:
            task_status.started()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            codes.append(closed.value.reason.code)

    async with stories_serve(database_url, tmp_path, DRAIN_SECONDS=str(DRAIN_SECONDS)) as server:
        with trio.fail_after(WAIT + DRAIN_SECONDS):
            async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=WAIT) as http:
                account = await signup(http, server.base_url)
                for _ in range(3):
                    await nursery.start(hold, server, account.token)
                await wait_for_connections(http, server.base_url, 3)
                # The HTTP client stays open: its idle keep-alive connection must not hold the drain either.
                elapsed = await server.stop(signal.SIGTERM)
    assert server.process.returncode == 0, server.describe()
    assert codes == [1001] * 3
    assert drain_seconds(server) < DRAIN_LIMIT_SECONDS, server.describe()
    assert not server.logged("http.drain_deadline")
    assert elapsed < EXIT_LIMIT_SECONDS, server.describe()
    assert "Traceback" not in server.stderr(), server.describe()


@pytest.fixture
def taken_port():
    """A port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


async def start_failure(database_url: str, tmp_path, host: str, port: int) -> subprocess.CompletedProcess[bytes]:
    env = {
        "DATABASE_URL": database_url,
        "HOST": host,
        "PORT": str(port),
        "JWT_SECRET": TEST_JWT_SECRET,
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "info",
    }
    return await serve_until_exit(tmp_path, env)


async def test_a_taken_port_stops_the_start_with_one_line_naming_port(database_url, tmp_path, taken_port):
    result = await start_failure(database_url, tmp_path, "127.0.0.1", taken_port)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.splitlines() == [
        f"stories: invalid configuration: PORT {taken_port} is already in use on 127.0.0.1; set PORT to a free port"
    ]
    assert b"Traceback" not in result.stdout


@pytest.mark.parametrize(
    ("host", "problem"),
    [("192.0.2.1", "is not an address of this machine"), ("no-such-host.invalid", "is not a known address")],
    ids=["not-local", "unknown-name"],
)
async def test_an_unbindable_host_stops_the_start_with_one_line_naming_host(database_url, tmp_path, host, problem):
    result = await start_failure(database_url, tmp_path, host, 0)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    (line,) = stderr.splitlines()
    assert line.startswith("stories: invalid configuration: HOST ")
    assert problem in line
    assert b"Traceback" not in result.stdout
