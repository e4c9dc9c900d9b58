"""PostgreSQL access. Where things live:

- bridge.py       the trio -> asyncio crossing that asyncpg needs, and its one error translation (`cross`);
- database.py     open_database(): the pool, its deadline, the health connection; `Query`, a facade's operation
                  declared once as one `Database.call` of an `aio_*` function;
- store.py        the trio-facing `Store`: one operation per use case, each one bridge crossing of an `aio_*`
                  function of the topic modules:
- users.py, stories.py (stories and the feed), engagement.py (views, reactions, counters, stats, viewers),
  social_graph.py (follows, blocks, mutes), idempotency.py, housekeeping.py (expiry, recounts, purges),
  moderation.py, tray.py: one topic each; visibility.py the SQL of who may read what, foreign_keys.py the
  translation of a write's foreign-key violations, locks.py the advisory lock ids, keyset.py a list's page;
- uploads.py, sessions.py, account.py, events.py: stores of their own (media uploads, sessions and access,
  account deletion and export, the event log);
- migrate.py      the migration engine; embedded.py the zero-setup PostgreSQL; models.py the records returned.
"""

from stories.store.database import Database, open_database
from stories.store.migrate import migrate
from stories.store.store import Store

__all__ = ["Database", "Store", "migrate", "open_database"]
