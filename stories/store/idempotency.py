"""Idempotency-Key storage: read a held key's response, claim a key inside a write's transaction, keep the
response the write rendered (API.md "Idempotency"). A key is held for IDEMPOTENCY_KEY_LIFETIME."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stories.domain import IDEMPOTENCY_KEY_LIFETIME
from stories.errors import IdempotencyKeyReused
from stories.store.models import IdempotencyClaim, Replay

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    import asyncpg
    from asyncpg.pool import PoolConnectionProxy


# make_interval(secs => ...) takes the lifetime in seconds.
_IDEMPOTENCY_KEY_SECONDS = IDEMPOTENCY_KEY_LIFETIME.total_seconds()


async def aio_idempotent_replay(
    pool: asyncpg.Pool, user_id: UUID, claim: IdempotencyClaim[Any], now: datetime
) -> Replay | None:
    """The stored response for this key and body when the key is held (< 24 h); IdempotencyKeyReused when it is
    held for another body; None when it is free. Read before the rate limit, so a retry never costs a token."""
    async with pool.acquire() as conn:
        held = await conn.fetchrow(
            """SELECT request_hash, response FROM idempotency_keys
               WHERE user_id = $1 AND key = $2 AND created_at > $3::timestamptz - make_interval(secs => $4)""",
            user_id,
            claim.key,
            now,
            _IDEMPOTENCY_KEY_SECONDS,
        )
    return None if held is None else _replay(held, claim)


def _replay(held: asyncpg.Record, claim: IdempotencyClaim[Any]) -> Replay:
    if held["request_hash"] != claim.request_hash:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return Replay(response=held["response"])


async def aio_claim_idempotency_key(
    conn: PoolConnectionProxy[asyncpg.Record],
    user_id: UUID,
    claim: IdempotencyClaim[Any],
    now: datetime,
    response: bytes | None = None,
) -> Replay | None:
    """Claim the key inside the caller's transaction: None when it is the caller's now (new, or older than
    24 h); a Replay when a request with the same hash holds it; IdempotencyKeyReused for another hash.

    A concurrent request with the same key blocks on the key's primary key until this transaction ends, then
    reads its response: exactly one of them creates anything. Without `response` here, the caller stores it
    with `aio_keep_response` once it has created what the response shows, in the same transaction.
    """
    claimed = await conn.fetchval(
        """INSERT INTO idempotency_keys (user_id, key, request_hash, response, created_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (user_id, key) DO UPDATE
               SET request_hash = EXCLUDED.request_hash, response = EXCLUDED.response,
                   created_at = EXCLUDED.created_at
               WHERE idempotency_keys.created_at <= $5 - make_interval(secs => $6)
           RETURNING true""",
        user_id,
        claim.key,
        claim.request_hash,
        response,
        now,
        _IDEMPOTENCY_KEY_SECONDS,
    )
    if claimed:
        return None
    held = await conn.fetchrow(
        "SELECT request_hash, response FROM idempotency_keys WHERE user_id = $1 AND key = $2", user_id, claim.key
    )
    if held is None:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request body")
    return _replay(held, claim)


async def aio_keep_response(
    conn: PoolConnectionProxy[asyncpg.Record], user_id: UUID, claim: IdempotencyClaim[Any], response: bytes
) -> None:
    """Store the response of a key claimed in this transaction by `aio_claim_idempotency_key`."""
    await conn.execute(
        "UPDATE idempotency_keys SET response = $3 WHERE user_id = $1 AND key = $2", user_id, claim.key, response
    )
