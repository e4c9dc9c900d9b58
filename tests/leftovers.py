"""What the database still holds about a user: every table of every schema, read whole (tests of account deletion).

Tables are listed from pg_tables at each call, so a table another change adds later is covered without touching
this file. A row counts when its text form holds the user's id or email. The one exception API.md allows: rows
of a `reports` table whose reporter column (any column named `reporter...`) is NULL, the anonymous reports a
deleted user filed.
"""

from __future__ import annotations

from tests.sql import sql_connection

__all__ = ["leftovers"]


async def leftovers(database_url: str, user_id: str, email: str) -> dict[str, list[str]]:
    """{"schema.table": [row text, ...]} of every row naming the user."""
    async with sql_connection(database_url) as connection:
        tables = await connection.fetch(
            """SELECT schemaname, tablename FROM pg_tables
               WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"""
        )
        assert any(t["tablename"] == "users" for t in tables), "the scan must see the service's tables"
        found: dict[str, list[str]] = {}
        for table in tables:
            schema, name = table["schemaname"], table["tablename"]
            qualified = f'"{schema}"."{name}"'
            anonymous = ""
            if name == "reports":
                reporters = await connection.fetch(
                    """SELECT column_name FROM information_schema.columns
                       WHERE table_schema = $1 AND table_name = $2 AND column_name LIKE 'reporter%'""",
                    schema,
                    name,
                )
                anonymous = "".join(f' AND t."{r["column_name"]}" IS NOT NULL' for r in reporters)
            rows = await connection.fetch(
                f"""SELECT t::text AS row FROM {qualified} t
                    WHERE (strpos(lower(t::text), $1) > 0 OR strpos(lower(t::text), $2) > 0){anonymous}""",
                user_id.lower(),
                email.lower(),
            )
            if rows:
                found[f"{schema}.{name}"] = [row["row"] for row in rows]
        return found
