"""Real `stories serve` subprocesses for tests, and WebSocket/HTTP clients for them.

Why not bench/server.py: it blocks while waiting (time.sleep in the event loop), passes the whole environment
on (a REDIS_URL or a `.env` of the developer's would leak into a "without Redis" test), and hides the process,
so a test can neither signal it nor read its exit code.

Each process writes its JSON log to a file in its own directory (also its working directory, so no `.env` is
read): a pipe would cost the test process a reader task, and a file keeps everything for the failure message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection

from tests.conftest import TEST_JWT_SECRET
from tests.helpers import PASSWORD, open_ws, refused_ws

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "START_SECONDS",
    "Account",
    "ServerProcess",
    "connections_gauge",
    "metric_sample",
    "open_socket",
    "refused_upgrade",
    "run_bench",
    "run_cli",
    "signup",
    "start_server",
    "stories_serve",
    "stories_serve_many",
    "wait_for_connections",
]

START_SECONDS = 60.0
STOP_SECONDS = 15.0
# The child's log is a file: waiting for a line means re-reading it now and then.
POLL_SECONDS = 0.05
CLOSE_SECONDS = 1.0

# Every variable the service reads: the child gets only the ones a test sets.
SERVICE_VARIABLES = frozenset(
    {
        "PORT",
        "HOST",
        "DATABASE_URL",
        "DATABASE_DIRECT_URL",
        "DATA_DIR",
        "REDIS_ADDR",
        "REDIS_PASSWORD",
        "REDIS_URL",
        "JWT_SECRET",
        "JWT_TTL_SECONDS",
        "MINIO_ENDPOINT",
        "MINIO_PUBLIC_ENDPOINT",
        "MINIO_ACCESS_KEY",
        "MINIO_SECRET_KEY",
        "MINIO_BUCKET",
        "MINIO_USE_SSL",
        "MINIO_REGION",
        "STORY_TTL_SECONDS",
        "FEED_CACHE_SECONDS",
        "EXPIRY_INTERVAL_SECONDS",
        "RATE_LIMIT_STORIES_PER_MINUTE",
        "RATE_LIMIT_REACTIONS_PER_MINUTE",
        "RATE_LIMIT_UPLOADS_PER_MINUTE",
        "MAX_UPLOAD_BYTES",
        "BCRYPT_COST",
        "CORS_ORIGINS",
        "LOG_LEVEL",
        "STORIES_ENV",
        "DRAIN_SECONDS",
        "DB_STATEMENT_TIMEOUT_SECONDS",
        "HTTP_KEEP_ALIVE_SECONDS",
        "DB_POOL_SIZE",
        "WS_PING_INTERVAL_SECONDS",
        "WS_DEAD_AFTER_SECONDS",
        "DB_ACQUIRE_TIMEOUT_SECONDS",
        "REQUEST_TIMEOUT_SECONDS",
        "WORKERS",
        "RETENTION_DAYS",
        "REPORT_HIDE_THRESHOLD",
        "REFRESH_TOKEN_DAYS",
        "MEDIA_URL_SECONDS",
    }
)


@dataclass
class ServerProcess:
    """A running `python -m stories serve`: its address once listening, and its log."""

    name: str
    process: trio.Process
    directory: Path
    base_url: str = ""
    _parsed: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    @property
    def log_path(self) -> Path:
        return self.directory / "stdout.jsonl"

    @property
    def stderr_path(self) -> Path:
        return self.directory / "stderr.txt"

    @property
    def port(self) -> int:
        port = urlsplit(self.base_url).port
        assert port is not None, self.base_url
        return port

    def lines(self) -> list[dict[str, Any]]:
        """Every complete JSON line logged so far (read incrementally)."""
        with self.log_path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for raw in complete.splitlines():
            try:
                self._parsed.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                self._parsed.append({"event": "<not json>", "raw": raw.decode(errors="replace")})
        return self._parsed

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]

    async def wait_for(self, event: str, count: int = 1) -> list[dict[str, Any]]:
        """The first `count` lines of `event`, waiting for them; fails if the process exits first."""
        while True:
            found = self.logged(event)
            if len(found) >= count:
                return found[:count]
            if self.process.poll() is not None:
                found = self.logged(event)
                assert len(found) >= count, f"{self.name} exited before {count} x {event!r}: {self.describe()}"
                return found[:count]
            await trio.sleep(POLL_SECONDS)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        events = [str(line.get("event")) for line in self.lines()]
        return f"[{self.name}] exit={self.process.poll()} events={events[-40:]} stderr={self.stderr()[-2000:]}"

    async def stop(self, signum: signal.Signals = signal.SIGTERM) -> float:
        """Send `signum` and wait for the exit; returns the seconds it took."""
        began = trio.current_time()
        self.process.send_signal(signum)
        with trio.fail_after(STOP_SECONDS):
            await self.process.wait()
        return trio.current_time() - began


@asynccontextmanager
async def stories_serve(
    database_url: str, directory: Path, name: str = "server", *, command: str = "serve", **env: str
) -> AsyncIterator[ServerProcess]:
    """Start `stories serve` (or `command`, e.g. `worker`) on 127.0.0.1 and a free port, wait until it listens;
    stop it at the end.

    `env` adds or overrides service variables (e.g. `REDIS_URL=...`). At the end a process still running
    gets SIGTERM, then SIGKILL if it does not exit in time.
    """
    async with stories_serve_many(database_url, {name: directory}, command=command, **env) as (server,):
        yield server


@asynccontextmanager
async def stories_serve_many(
    database_url: str, directories: dict[str, Path], *, command: str = "serve", **env: str
) -> AsyncIterator[tuple[ServerProcess, ...]]:
    """Like `stories_serve`, for several processes on one database (named by `directories`'s keys),
    started together: a process takes seconds to import and boot."""
    servers: list[ServerProcess] = []
    try:
        for name, directory in directories.items():
            servers.append(await _spawn(database_url, name, directory, env, command))
        with trio.fail_after(START_SECONDS):
            for server in servers:
                (listening,) = await server.wait_for("http.listening")
                server.base_url = str(listening["binds"][0])
        yield tuple(servers)
    finally:
        # Together: each may take its whole drain deadline (see `ServerProcess.stop`).
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as stopping:
                for server in servers:
                    stopping.start_soon(_stop, server.process)


async def start_server(
    database_url: str, name: str, directory: Path, *, command: str = "serve", **env: str
) -> ServerProcess:
    """One process as `stories_serve` starts it, listening, and left to the caller to stop: for a run that
    kills and restarts its processes (bench/chaos.py). Killed if it does not listen within START_SECONDS."""
    server = await _spawn(database_url, name, directory, env, command)
    try:
        with trio.fail_after(START_SECONDS):
            (listening,) = await server.wait_for("http.listening")
    except BaseException:
        with trio.CancelScope(shield=True):
            await _stop(server.process)
        raise
    server.base_url = str(listening["binds"][0])
    return server


async def _spawn(
    database_url: str, name: str, directory: Path, env: dict[str, str], command: str = "serve"
) -> ServerProcess:
    await trio.Path(directory).mkdir(parents=True, exist_ok=True)
    child_env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    child_env.update(
        DATABASE_URL=database_url,
        HOST="127.0.0.1",
        PORT="0",
        JWT_SECRET=TEST_JWT_SECRET,
        BCRYPT_COST="4",
        DATA_DIR=str(directory / "data"),
        LOG_LEVEL="info",
        # No embedded object store unless a test asks for one (MINIO_ENDPOINT=""): it would only slow the start.
        MINIO_ENDPOINT="off",
    )
    # Last: a test's own values win, a fixed PORT too.
    child_env.update(env)
    with (directory / "stdout.jsonl").open("wb") as stdout, (directory / "stderr.txt").open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "stories", command], env=child_env, cwd=directory, stdout=stdout, stderr=stderr
        )
    return ServerProcess(name, process, directory)


async def _stop(process: trio.Process) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(STOP_SECONDS):
            await process.wait()
    if process.poll() is None:
        process.kill()
        await process.wait()


@dataclass(frozen=True)
class Account:
    user_id: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def signup(http: httpx.AsyncClient, base_url: str, label: str = "user") -> Account:
    email = f"{label}-{os.urandom(6).hex()}@example.com"
    response = await http.post(f"{base_url}/signup", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    body = response.json()
    return Account(user_id=body["user_id"], token=body["token"])


async def metric_sample(http: httpx.AsyncClient, base_url: str, name: str) -> float:
    """One unlabelled sample (e.g. `ws_connections`) from the process's /metrics."""
    response = await http.get(f"{base_url}/metrics")
    assert response.status_code == 200, response.text
    for line in response.text.splitlines():
        sample, _, value = line.partition(" ")
        if sample == name:
            return float(value)
    raise AssertionError(f"no {name} sample on /metrics")


async def connections_gauge(http: httpx.AsyncClient, base_url: str) -> float:
    return await metric_sample(http, base_url, "ws_connections")


async def wait_for_connections(http: httpx.AsyncClient, base_url: str, count: int) -> None:
    """Wait until the process counts `count` open sockets (it subscribes a socket right after the upgrade,
    so a client whose handshake is done may still be a moment ahead of the server)."""
    # The gauge lives in another process: ask again now and then.
    while await connections_gauge(http, base_url) != count:  # noqa: ASYNC110
        await trio.sleep(POLL_SECONDS)


def open_socket(
    server: ServerProcess, token: str | None = None, headers: list[tuple[str, str]] | None = None
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """A client of `server`'s /ws (`?token=` when given)."""
    path = "/ws" if token is None else f"/ws?token={token}"
    return open_ws(server.port, path, headers, close_seconds=CLOSE_SECONDS)


async def refused_upgrade(
    server: ServerProcess, token: str | None = None, headers: list[tuple[str, str]] | None = None
) -> ConnectionRejected:
    """The rejection of an upgrade of `server`'s /ws that must be refused."""
    return await refused_ws(server.port, "/ws" if token is None else f"/ws?token={token}", headers)


# The repository's root: where `python -m bench.*` finds the benches.
ROOT = Path(__file__).resolve().parent.parent


def run_bench(bench: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m bench.BENCH ARGS` from the repository root, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m stories ARGS` in `cwd`, with none of the service's variables inherited but `env`'s."""
    base = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "stories", *args],
        env={**base, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def serve_until_exit(cwd: Path, env: dict[str, str], seconds: float = 60) -> subprocess.CompletedProcess[bytes]:
    """`python -m stories serve` in `cwd` that must stop on its own (a start that fails): its exit code and
    output. None of the service's variables are inherited but `env`'s."""
    base = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    with trio.fail_after(seconds):
        return await trio.run_process(
            [sys.executable, "-m", "stories", "serve"],
            env={**base, **env},
            cwd=cwd,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
