"""Start a real `stories serve` subprocess on a fresh database, for benchmarks."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

from stories.settings import mask_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T = TypeVar("T")

DEFAULT_ADMIN_URL = "postgres://root@127.0.0.1:5432/test"
BENCH_JWT_SECRET = "bench-secret-0123456789abcdef-0123456789"
STARTUP_SECONDS = 60


@dataclass(frozen=True)
class RunningServer:
    base_url: str
    pid: int
    log_path: Path


def admin_failed(admin_url: str, error: Exception) -> SystemExit:
    """The one line a bench ends with when the PostgreSQL it creates its databases on (--admin-url) cannot be
    reached or refuses, instead of asyncpg's traceback."""
    return SystemExit(
        f"bench: cannot use the PostgreSQL at {mask_url(admin_url)} ({type(error).__name__}: {error}); every bench "
        "creates its databases on a running PostgreSQL: start one, or pass --admin-url postgres://USER@HOST:PORT/DB "
        "(a user allowed to CREATE DATABASE)"
    )


def run_sql(url: str, sql: str) -> str:
    """Run `sql` on its own connection to `url`; its status ("DELETE 3012")."""

    async def run() -> str:
        conn = await asyncpg.connect(url)
        try:
            return await conn.execute(sql)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        raise admin_failed(url, error) from None


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"stories_bench_{uuid.uuid4().hex[:8]}"
    run_sql(admin_url, f"CREATE DATABASE {name}")
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))
    finally:
        run_sql(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def stories_env(
    database_url: str, data_dir: Path, extra_env: dict[str, str] | None = None, *, checkout: Path | None = None
) -> dict[str, str]:
    """The environment of a bench `stories` command: this process's, minus Redis, plus the bench settings.

    With `checkout`, that directory goes first on PYTHONPATH, so its code runs with this virtualenv's packages.
    """
    # Redis only when the caller asks for it (extra_env): a developer's REDIS_URL must not switch it on.
    inherited = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_ADDR", "REDIS_PASSWORD")}
    if checkout is not None:
        inherited["PYTHONPATH"] = os.pathsep.join(filter(None, [str(checkout), inherited.get("PYTHONPATH")]))
    return {
        **inherited,
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": "0",
        "JWT_SECRET": BENCH_JWT_SECRET,
        "BCRYPT_COST": "4",
        "DATA_DIR": str(data_dir),
        **(extra_env or {}),
    }


def free_port() -> int:
    """A port nothing listens on right now (the OS picks it; a tiny race with other programs remains)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def stories_server(
    database_url: str, extra_env: dict[str, str] | None = None, *, checkout: Path | None = None, port: int = 0
) -> Iterator[RunningServer]:
    """`stories serve` on 127.0.0.1 and a free port; waits for it to listen; SIGTERM at the end.

    Its JSON log goes to a file (a pipe nobody drains would stall the server). With `port` 0 the bound address
    is read from the `http.listening` line (logged at info); with a fixed `port` the server is ready once
    `GET /healthz` answers, whatever LOG_LEVEL says. With `checkout`, that checkout's code is served (it is the
    working directory and first on PYTHONPATH) with this virtualenv's packages. Its DATA_DIR (in /tmp) is removed
    after a clean stop, and kept, with the log, after any other.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="stories-bench-"))
    env = stories_env(database_url, data_dir, extra_env, checkout=checkout)
    env["PORT"] = str(port)
    log_path = data_dir / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "stories", "serve"], env=env, stdout=log_file, cwd=checkout)
    try:
        if port:
            base_url = f"http://127.0.0.1:{port}"
            _wait_serve(process, log_path, "answer /healthz", lambda: _healthy(base_url))
        else:
            base_url = _wait_serve(process, log_path, "listen", lambda: _bound(log_path))
        yield RunningServer(base_url=base_url, pid=process.pid, log_path=log_path)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # A clean stop leaves nothing behind; otherwise the log stays where it can be read.
        if process.returncode == 0:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"bench: stories serve exited with {process.returncode}; its log: {log_path}", file=sys.stderr)


def wait_started(
    process: subprocess.Popen[bytes],
    ready: Callable[[], T | None],
    *,
    name: str,
    waiting_for: str,
    seconds: float,
    poll_seconds: float,
    detail: Callable[[], str],
) -> T:
    """`ready()`'s first answer that is not None, asked every `poll_seconds` while `process` runs; a RuntimeError
    naming `name`, what it was `waiting_for` and its `detail()` (its log) if it exits or `seconds` pass first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; {detail()}")
        answer = ready()
        if answer is not None:
            return answer
        time.sleep(poll_seconds)
    raise RuntimeError(f"{name} did not {waiting_for} within {seconds:g} s; {detail()}")


def _wait_serve(process: subprocess.Popen[bytes], log_path: Path, waiting_for: str, ready: Callable[[], T | None]) -> T:
    """`wait_started` for `stories serve`: STARTUP_SECONDS, and its log named in the error."""
    return wait_started(
        process,
        ready,
        name="stories serve",
        waiting_for=waiting_for,
        seconds=STARTUP_SECONDS,
        poll_seconds=0.1,
        detail=lambda: f"see {log_path}",
    )


def _healthy(base_url: str) -> bool | None:
    """True once /healthz answers 200, else None."""
    try:
        return httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200 or None
    except httpx.TransportError:
        return None


def _bound(log_path: Path) -> str | None:
    """The address the server logged it listens on (`http.listening`), once it has."""
    for line in log_path.read_bytes().splitlines():
        event = orjson.loads(line)
        if event.get("event") == "http.listening":
            return str(event["binds"][0])
    return None
