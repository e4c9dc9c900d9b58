"""PostgreSQL access. Where things live:

- bridge.py    the trio -> asyncio crossing that asyncpg needs;
- database.py  open_database(): the pool, its deadline, error translation, the health connection;
- queries.py   the use cases' SQL (asyncio side); store.py the trio-facing `Store` that runs them;
  social.py and moderation.py the same for the social graph and for reports and moderation;
- migrate.py   the migration engine; embedded.py the zero-setup PostgreSQL; models.py the records returned.
"""

from stories.store.database import Database, open_database
from stories.store.migrate import migrate
from stories.store.store import Store

__all__ = ["Database", "Store", "migrate", "open_database"]
