"""PostgreSQL access: `open_store` yields a `Store`; SQL lives in `_pg` (the asyncio side)."""

from stories.store.migrate import migrate
from stories.store.pool import open_store
from stories.store.store import Store

__all__ = ["Store", "migrate", "open_store"]
