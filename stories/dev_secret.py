"""The development JWT secret: with no JWT_SECRET (outside production), one secret generated once and kept in
DATA_DIR, the same for every process that starts on it (API.md "Configuration")."""

from __future__ import annotations

import fcntl
import os
import secrets
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from stories.errors import ConfigError
from stories.settings import MIN_JWT_SECRET_BYTES

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stories.settings import Settings

__all__ = ["JWT_SECRET_FILE", "resolve_jwt_secret"]

JWT_SECRET_FILE = "jwt_secret"


def resolve_jwt_secret(settings: Settings) -> tuple[str, bool]:
    """The configured secret, or one generated once and kept in DATA_DIR.

    Returns `(secret, generated)`, so the caller can warn that a development secret is in use. Blocks on file
    I/O (and, while another process writes the secret, on its lock): call it before the event loop serves.
    Raises ConfigError naming DATA_DIR when the directory cannot hold the secret.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret, False
    try:
        return _stored_or_generated_secret(settings.data_dir), True
    except OSError as error:
        raise _data_dir_error(settings.data_dir, error) from None


def _stored_or_generated_secret(data_dir: Path) -> str:
    """The secret in `data_dir`, written first if there is none.

    Every process starting on one DATA_DIR gets the same complete secret: writers take an exclusive lock on
    `jwt_secret.lock`, look again, and write a new secret to a temporary file in the same directory that is
    fsynced and then renamed over `jwt_secret`. So a reader sees no file, an old leftover, or a whole secret,
    never a partial one, even if a writer crashes; the first writer wins because a complete secret is never
    replaced. An empty or short leftover (a crash of an older, non-atomic version) is replaced.
    """
    path = data_dir / JWT_SECRET_FILE
    secret = _read_secret(path)
    if secret is not None:
        return secret
    data_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(data_dir / f"{JWT_SECRET_FILE}.lock"):
        secret = _read_secret(path)  # another process may have written it while this one waited
        if secret is not None:
            return secret
        # Temporary files of writers that died before their rename: no writer is active while we hold the lock.
        for stale in data_dir.glob(f".{JWT_SECRET_FILE}.*.tmp"):
            stale.unlink(missing_ok=True)
        secret = secrets.token_urlsafe(48)
        fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=f".{JWT_SECRET_FILE}.", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "w") as file:
                file.write(secret + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        finally:
            Path(temporary).unlink(missing_ok=True)  # only left when the write or the rename failed
        _fsync_directory(data_dir)  # makes the rename itself durable
    return secret


def _read_secret(path: Path) -> str | None:
    """The complete secret stored in `path`, or None when there is none (missing, empty, short, not text)."""
    try:
        secret = path.read_bytes().decode("utf-8").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        return None
    return secret if len(secret.encode("utf-8")) >= MIN_JWT_SECRET_BYTES else None


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """An flock on `path` (created if needed, never deleted: deleting a lock file breaks the exclusion).
    flock excludes other processes and other open files of this process alike, so threads are covered too."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _data_dir_error(data_dir: Path, error: OSError) -> ConfigError:
    reason = error.strerror or type(error).__name__
    return ConfigError(
        "DATA_DIR",
        f"{str(data_dir)!r} cannot hold the generated JWT secret ({reason}): point DATA_DIR at a writable "
        "directory, or set JWT_SECRET",
    )
