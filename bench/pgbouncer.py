"""A real PgBouncer in transaction pooling mode, for the benches and the tests: `running_pgbouncer(url)`.

It starts the Debian package's binary (found on PATH, or in /usr/sbin) on 127.0.0.1 and a free port in front of
the server of `url`, for every database on it, and stops it at the end. As root it runs as `nobody` (PgBouncer
refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from bench.server import free_port, wait_started

__all__ = ["PgBouncer", "pgbouncer_binary", "running_pgbouncer"]

START_SECONDS = 10.0
STOP_SECONDS = 5.0
POLL_SECONDS = 0.05
# Server connections per database and user: more than the app's pool plus what a test opens beside it.
DEFAULT_POOL_SIZE = 20


def pgbouncer_binary() -> str | None:
    """PgBouncer on PATH, or in /usr/sbin where Debian installs it (not on every user's PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


@dataclass(frozen=True)
class PgBouncer:
    host: str
    port: int
    log: Path
    pid: int

    def url_for(self, direct_url: str) -> str:
        """`direct_url` (same user, password and database) through this pooler."""
        parts = urlsplit(direct_url)
        user, at, _ = parts.netloc.rpartition("@")
        return urlunsplit(parts._replace(netloc=f"{user}{at}{self.host}:{self.port}"))

    def logins(self, database: str) -> int:
        """Client logins PgBouncer accepted for `database` so far (it logs each one)."""
        return self.log.read_text(errors="replace").count(f"login attempt: db={database} ")


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


@contextmanager
def running_pgbouncer(upstream_url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Iterator[PgBouncer]:
    """PgBouncer (pool_mode=transaction) on 127.0.0.1 and a free port, in front of `upstream_url`'s server, for
    every database on it and the URL's user (trusted: it logs in to the server with the URL's password)."""
    binary = pgbouncer_binary()
    if binary is None:
        raise RuntimeError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    upstream = urlsplit(upstream_url)
    if upstream.hostname is None:
        raise RuntimeError("PgBouncer needs a TCP address in the database URL")
    user = unquote(upstream.username or os.environ.get("USER", "postgres"))
    directory = Path(tempfile.mkdtemp(prefix="stories-test-pgbouncer-"))
    # PgBouncer refuses to run as root; as another user it must read its files.
    directory.chmod(0o755)
    port = free_port()
    (directory / "users.txt").write_text(f"{_quoted(user)} {_quoted(unquote(upstream.password or ''))}\n")
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={upstream.hostname} port={upstream.port or 5432}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {directory / 'users.txt'}\n"
        "pool_mode = transaction\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 1000\n"
        "log_connections = 1\n"
        "log_disconnections = 0\n"
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    log = directory / "pgbouncer.log"
    run_as = ["-u", "nobody"] if os.geteuid() == 0 else []
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, *run_as, str(directory / "pgbouncer.ini")], stdout=output, stderr=subprocess.STDOUT
        )
    try:
        _wait_listening(process, port, log)
        yield PgBouncer("127.0.0.1", port, log, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    def listening() -> bool | None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return None
        return True

    wait_started(
        process,
        listening,
        name="pgbouncer",
        waiting_for="listen",
        seconds=START_SECONDS,
        poll_seconds=POLL_SECONDS,
        detail=lambda: log.read_text(errors="replace"),
    )
