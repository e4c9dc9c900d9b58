"""Sessions and refresh tokens (schema/0012_sessions.sql), and the change log that keeps every process's view of
revoked sessions and suspended users right (stories/actors/access.py).

The `aio_*` functions run on the bridge's asyncio loop (no trio), each on one connection; `SessionStore` and
`AccessLog` are their trio side, one `Database.call` per operation (`Query`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from stories.store.database import OnDatabase, Query

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime, timedelta
    from uuid import UUID

    import asyncpg


__all__ = [
    "AccessChanges",
    "AccessLog",
    "Account",
    "Refresh",
    "RefreshOutcome",
    "SessionInfo",
    "SessionStore",
]

# access_changes rows live this long; a process that has not read the log for half of it reloads everything.
ACCESS_CHANGES_KEEP = "1 hour"


class RefreshOutcome(enum.Enum):
    REFRESHED = "refreshed"
    # The token was used already: its session is revoked now (or was).
    REUSED = "reused"
    # Unknown, expired, or of a session revoked earlier by other means.
    INVALID = "invalid"
    REVOKED = "revoked"
    SUSPENDED = "suspended"


@dataclass(frozen=True, slots=True)
class Refresh:
    outcome: RefreshOutcome
    user_id: UUID | None = None
    session_id: UUID | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    session_id: UUID
    created_at: datetime
    last_used_at: datetime
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class Account:
    """What a password change or a login needs to know about a user."""

    user_id: UUID
    email: str
    password_hash: str
    suspended: bool


@dataclass(frozen=True, slots=True)
class AccessChanges:
    """Change-log rows read after a horizon, and the next horizon (rows of transactions at or above it may
    still appear, so they are read again)."""

    horizon: int
    # (xid, session_id, user_id): a revoked or deleted session, or a user whose state changed.
    rows: list[tuple[int, UUID | None, UUID | None]]


# --- sessions (asyncio side) ------------------------------------------------------------------------------


async def aio_open_session(
    pool: asyncpg.Pool, session_id: UUID, user_id: UUID, now: datetime, user_agent: str | None, token_hash: bytes
) -> bool | None:
    """Open a session with its first refresh token: True; False when the user is suspended (nothing opened);
    None when the user no longer exists."""
    async with pool.acquire() as conn, conn.transaction():
        suspended = await conn.fetchval("SELECT suspended_at IS NOT NULL FROM users WHERE id = $1 FOR SHARE", user_id)
        if suspended is None or suspended:
            return None if suspended is None else False
        await conn.execute(
            """INSERT INTO sessions (id, user_id, created_at, last_used_at, user_agent) VALUES ($1, $2, $3, $3, $4)""",
            session_id,
            user_id,
            now,
            user_agent,
        )
        await conn.execute(
            "INSERT INTO session_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
            token_hash,
            session_id,
            now,
        )
    return True


async def aio_refresh(
    pool: asyncpg.Pool, old_hash: bytes, new_hash: bytes, now: datetime, lifetime: timedelta
) -> Refresh:
    """Rotate a refresh token. The UPDATE ... WHERE used_at IS NULL decides races: of two transactions holding
    one token, the second waits for the first's row lock, then finds the token used, which is a reuse."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            refresh = await _refresh(conn, old_hash, new_hash, now, lifetime)
        except BaseException:
            await transaction.rollback()
            raise
        # A reuse revokes the session: that must stay. Anything else that is not a success changes nothing, so
        # a token refused only because its user is suspended works again once they are not.
        if refresh.outcome in (RefreshOutcome.REFRESHED, RefreshOutcome.REUSED):
            await transaction.commit()
        else:
            await transaction.rollback()
    return refresh


async def _refresh(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    old_hash: bytes,
    new_hash: bytes,
    now: datetime,
    lifetime: timedelta,
) -> Refresh:
    used = await conn.fetchrow(
        """UPDATE session_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL
           RETURNING session_id, issued_at""",
        old_hash,
        now,
    )
    if used is None:
        session_id = await conn.fetchval("SELECT session_id FROM session_tokens WHERE token_hash = $1", old_hash)
        if session_id is None:
            return Refresh(RefreshOutcome.INVALID)
        await conn.execute("UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", session_id, now)
        return Refresh(RefreshOutcome.REUSED, session_id=session_id)
    session = await conn.fetchrow(
        """SELECT s.id, s.user_id, s.revoked_at, u.email, u.suspended_at
           FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1""",
        used["session_id"],
    )
    if session is None:  # the foreign key makes this impossible; answered as an unknown token all the same
        return Refresh(RefreshOutcome.INVALID)
    if session["revoked_at"] is not None:
        return Refresh(RefreshOutcome.REVOKED, session_id=session["id"])
    if used["issued_at"] + lifetime <= now:
        return Refresh(RefreshOutcome.INVALID)
    if session["suspended_at"] is not None:
        return Refresh(RefreshOutcome.SUSPENDED, user_id=session["user_id"])
    await conn.execute(
        "INSERT INTO session_tokens (token_hash, session_id, issued_at) VALUES ($1, $2, $3)",
        new_hash,
        session["id"],
        now,
    )
    await conn.execute("UPDATE sessions SET last_used_at = $2 WHERE id = $1", session["id"], now)
    return Refresh(RefreshOutcome.REFRESHED, session["user_id"], session["id"], session["email"])


async def aio_revoke_session(pool: asyncpg.Pool, user_id: UUID, session_id: UUID, now: datetime) -> bool:
    """Revoke one of the user's sessions (idempotent); False when no session with this id is theirs."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """WITH target AS (SELECT id FROM sessions WHERE id = $1 AND user_id = $2),
                    revoked AS (UPDATE sessions SET revoked_at = $3
                                WHERE id IN (SELECT id FROM target) AND revoked_at IS NULL)
               SELECT id FROM target""",
            session_id,
            user_id,
            now,
        )
    return row is not None


async def aio_active_sessions(pool: asyncpg.Pool, user_id: UUID, since: datetime) -> list[SessionInfo]:
    """The user's sessions neither revoked nor idle since before `since` (their refresh token expired),
    most recently used first."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT id, created_at, last_used_at, user_agent FROM sessions
               WHERE user_id = $1 AND revoked_at IS NULL AND last_used_at > $2
               ORDER BY last_used_at DESC, id""",
            user_id,
            since,
        )
    return [SessionInfo(r["id"], r["created_at"], r["last_used_at"], r["user_agent"]) for r in rows]


async def aio_account(pool: asyncpg.Pool, user_id: UUID) -> Account | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT id, email, password_hash, suspended_at FROM users WHERE id = $1", user_id)
    if row is None:
        return None
    return Account(row["id"], row["email"], row["password_hash"], row["suspended_at"] is not None)


async def aio_change_password(
    pool: asyncpg.Pool, user_id: UUID, keep_session: UUID, password_hash: str, now: datetime
) -> list[UUID]:
    """Set the password and revoke every other open session of the user, in one transaction; the ids revoked."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)
        rows = await conn.fetch(
            """UPDATE sessions SET revoked_at = $3
               WHERE user_id = $1 AND id <> $2 AND revoked_at IS NULL RETURNING id""",
            user_id,
            keep_session,
            now,
        )
    return [row["id"] for row in rows]


async def aio_user_states(pool: asyncpg.Pool, user_ids: Collection[UUID]) -> dict[UUID, bool]:
    """For each of these users that exists: whether they are suspended."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, suspended_at IS NOT NULL AS suspended FROM users WHERE id = ANY($1::uuid[])", list(user_ids)
        )
    return {row["id"]: row["suspended"] for row in rows}


# --- the change log (asyncio side) ------------------------------------------------------------------------

# The horizon: every transaction below it has ended, so no row below it can appear later.
_HORIZON = "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


async def aio_access_start(pool: asyncpg.Pool, revoked_since: datetime) -> tuple[int, list[UUID]]:
    """The horizon to read the change log from, and the sessions revoked since `revoked_since` (their tokens may
    still be unexpired), read in one snapshot: a revocation is in the list or at/after the horizon."""
    # One statement, so one snapshot, with no `BEGIN ISOLATION LEVEL`: that fails on a connection an interrupted
    # statement left in an implicit transaction, as happens without a statement cache (tests/store/test_access_log.py).
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_HORIZON} AS horizon, ARRAY(SELECT id FROM sessions WHERE revoked_at > $1) AS revoked",
            revoked_since,
        )
    assert row is not None
    return int(row["horizon"]), list(row["revoked"])


async def aio_access_read(pool: asyncpg.Pool, horizon: int) -> AccessChanges:
    """Change-log rows of transactions at or after `horizon`, and the next horizon (one snapshot)."""
    async with pool.acquire() as conn:  # one statement, one snapshot: see aio_access_start
        rows = await conn.fetch(
            f"""SELECT h.horizon, c.xid::text::bigint AS xid, c.session_id, c.user_id
                FROM (SELECT {_HORIZON} AS horizon) h
                LEFT JOIN access_changes c ON c.xid >= $1::text::xid8""",
            str(horizon),
        )
    changes = [(row["xid"], row["session_id"], row["user_id"]) for row in rows if row["xid"] is not None]
    return AccessChanges(int(rows[0]["horizon"]), changes)


async def aio_access_prune(pool: asyncpg.Pool, ended_before: datetime, idle_before: datetime, limit: int) -> int:
    """Drop change-log rows older than ACCESS_CHANGES_KEEP, and up to `limit` sessions (their refresh tokens go
    with them) that can never be used again: revoked before `ended_before` (every token they issued has expired),
    or idle since before `idle_before` (their refresh token expired). Returns how many sessions went."""
    async with pool.acquire() as conn:
        await conn.execute(
            f"DELETE FROM access_changes WHERE changed_at < clock_timestamp() - interval '{ACCESS_CHANGES_KEEP}'"
        )
        status = await conn.execute(
            """DELETE FROM sessions WHERE id IN (
                   SELECT id FROM sessions WHERE revoked_at < $1
                   UNION ALL
                   SELECT id FROM sessions WHERE revoked_at IS NULL AND last_used_at < $2 AND last_used_at < $1
                   LIMIT $3)""",
            ended_before,
            idle_before,
            limit,
        )
    return int(status.split()[-1])


# --- the trio side ----------------------------------------------------------------------------------------


class SessionStore(OnDatabase):
    """Sessions by use case. Safe to share between tasks; every operation is cancellable and raises the domain's
    errors (StoreUnavailable, Overloaded), never asyncpg's."""

    open_session = Query(aio_open_session)
    refresh = Query(aio_refresh)
    revoke = Query(aio_revoke_session)
    active = Query(aio_active_sessions)
    account = Query(aio_account)
    change_password = Query(aio_change_password)
    user_states = Query(aio_user_states)


class AccessLog(OnDatabase):
    """The change log's reader (stories/actors/access.py's AccessWatcher)."""

    start = Query(aio_access_start)
    read = Query(aio_access_read)
    prune = Query(aio_access_prune)
    user_states = Query(aio_user_states)
