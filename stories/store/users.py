"""Users and their profiles: sign-up, look-up by email, the caller's own profile and another user's as a
reader sees it (API.md "Accounts", "Profiles")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.errors import UserGone
from stories.store.models import Profile, User
from stories.store.visibility import blocked_by

if TYPE_CHECKING:
    from collections.abc import Collection
    from datetime import datetime
    from uuid import UUID

    import asyncpg


async def aio_existing_users(pool: asyncpg.Pool, user_ids: Collection[UUID]) -> set[UUID]:
    """Which of these users exist."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[])", list(user_ids))
    return {row["id"] for row in rows}


def _user(row: asyncpg.Record) -> User:
    return User(id=row["id"], email=row["email"], password_hash=row["password_hash"], created_at=row["created_at"])


async def aio_create_user(
    pool: asyncpg.Pool, user_id: UUID, email: str, password_hash: str, now: datetime, display_name: str | None
) -> User | None:
    """Insert a user; None when the email is taken (the unique index decides, so races are safe)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """INSERT INTO users (id, email, password_hash, created_at, display_name) VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (email) DO NOTHING
               RETURNING id, email, password_hash, created_at""",
            user_id,
            email,
            password_hash,
            now,
            display_name,
        )
    return None if row is None else _user(row)


async def aio_user_by_email(pool: asyncpg.Pool, email: str) -> User | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT id, email, password_hash, created_at FROM users WHERE email = $1", email)
    return None if row is None else _user(row)


def profile_from_row(row: asyncpg.Record, prefix: str = "", *, email: str | None = None) -> Profile:
    """The profile in `row`'s columns (id, display_name, created_at, followers_count, following_count, and the
    relation when the query reads it), each after `prefix` (as for stories.story_from_row)."""
    return Profile(
        user_id=row[f"{prefix}id"],
        display_name=row[f"{prefix}display_name"],
        created_at=row[f"{prefix}created_at"],
        followers=row[f"{prefix}followers_count"],
        following=row[f"{prefix}following_count"],
        email=email,
        followed_by_me=row.get(f"{prefix}followed_by_me", False),
        follows_me=row.get(f"{prefix}follows_me", False),
    )


_PROFILE_COLUMNS = "u.id, u.display_name, u.created_at, u.followers_count, u.following_count"


async def aio_me(pool: asyncpg.Pool, user_id: UUID) -> Profile | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT {_PROFILE_COLUMNS}, u.email FROM users u WHERE u.id = $1", user_id)
    return None if row is None else profile_from_row(row, email=row["email"])


async def aio_set_display_name(pool: asyncpg.Pool, user_id: UUID, display_name: str | None) -> Profile:
    """The caller's profile after the change; Unauthorized when the user no longer exists."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"UPDATE users u SET display_name = $2 WHERE u.id = $1 RETURNING {_PROFILE_COLUMNS}, u.email",
            user_id,
            display_name,
        )
    if row is None:
        raise UserGone()
    return profile_from_row(row, email=row["email"])


async def aio_profile(pool: asyncpg.Pool, reader_id: UUID, user_id: UUID) -> Profile | None:
    """A user's public profile as `reader_id` sees it; None when unknown or when they have blocked the reader."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"""SELECT {_PROFILE_COLUMNS},
                       EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = u.id)
                           AS followed_by_me,
                       EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = u.id AND f.followee_id = $1)
                           AS follows_me
                FROM users u
                WHERE u.id = $2
                  AND NOT {blocked_by("u.id", "$1")}""",
            reader_id,
            user_id,
        )
    return None if row is None else profile_from_row(row)
