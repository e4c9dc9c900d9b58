"""Finds the numbered SQL migrations (schema/NNNN_name.sql) and applies the missing ones."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from stories.store.models import Migration

if TYPE_CHECKING:
    from stories.store.store import Store

__all__ = ["load_migrations", "migrate", "schema_dir"]

log = structlog.get_logger()

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def schema_dir() -> Path:
    """The migrations folder: inside the installed wheel (stories/_schema), else the checkout's schema/."""
    packaged = Path(str(resources.files("stories"))) / "_schema"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "schema"


def load_migrations(folder: Path | None = None) -> list[Migration]:
    folder = folder or schema_dir()
    migrations = []
    for path in sorted(folder.iterdir()):
        match = _NAME.match(path.name)
        if match is None:
            continue
        migrations.append(Migration(version=int(match[1]), name=match[2], sql=path.read_text("utf-8")))
    versions = [m.version for m in migrations]
    if not migrations or len(set(versions)) != len(versions):
        raise RuntimeError(f"schema folder {folder} has no migrations or duplicate version numbers")
    return migrations


async def migrate(store: Store) -> list[int]:
    """Apply what is missing; safe when several processes start at once (advisory lock)."""
    applied = await store.migrate(load_migrations())
    log.info("db.migrated", applied=applied)
    return applied
