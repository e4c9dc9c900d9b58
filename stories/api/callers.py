"""Who is calling: a bearer token checked once, and its user known to exist, both cached per process.

Verifying an HS256 token costs ~100 µs (JSON, base64, HMAC); a client sends the same token for hours, so a
verified token is remembered (its expiry is still checked on every use). A valid token whose user does not
exist (a deleted user, a database restored without them) is a 401 on every route: the user's existence is
checked once and remembered for `USER_TTL_SECONDS`, so the check costs no query on the hot path. Users are
never deleted through the API; a user an operator deletes gets 401 on writes at once (the foreign keys tell,
see stories/store/queries.py) and on reads within USER_TTL_SECONDS.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import orjson
import trio

from stories.errors import Unauthorized

if TYPE_CHECKING:
    from collections.abc import Collection
    from uuid import UUID

    from stories.security import TokenIssuer

__all__ = ["Callers", "token_expiry"]

MAX_TOKENS = 10_000
MAX_USERS = 50_000
USER_TTL_SECONDS = 300.0

K = TypeVar("K")
V = TypeVar("V")


class _Verified(NamedTuple):
    user_id: UUID
    expires_at: float


class UserStore(Protocol):
    async def existing_users(self, user_ids: Collection[UUID]) -> set[UUID]: ...


@dataclass(slots=True)
class _Lookup:
    """One query for every user id whose existence was asked during one scheduling round."""

    user_ids: set[UUID]
    done: trio.Event = field(default_factory=trio.Event)
    found: set[UUID] | None = None


@dataclass(slots=True)
class Callers:
    """Authenticates requests. Both caches are bounded LRUs; safe to share between tasks."""

    tokens: TokenIssuer
    store: UserStore
    _verified: OrderedDict[str, _Verified] = field(default_factory=OrderedDict)
    _known_until: OrderedDict[UUID, float] = field(default_factory=OrderedDict)
    _gathering: _Lookup | None = None

    async def authenticate(self, token: str) -> UUID:
        """The caller's user id; Unauthorized when the token is bad, expired, or names no user."""
        verified = self._verified.get(token)
        if verified is None:
            user_id = self.tokens.verify(token)
            _remember(self._verified, token, _Verified(user_id, token_expiry(token)), MAX_TOKENS)
        else:
            # The signature and claims were checked once; time moves on, so the expiry is checked every time.
            if verified.expires_at <= self.tokens.clock.now().timestamp():
                del self._verified[token]
                raise Unauthorized("the token has expired; log in again")
            self._verified.move_to_end(token)
            user_id = verified.user_id
        await self._ensure_exists(user_id)
        return user_id

    def forget(self, user_id: UUID) -> None:
        """Check this user's existence again at their next request."""
        self._known_until.pop(user_id, None)

    async def _ensure_exists(self, user_id: UUID) -> None:
        """Known users cost nothing. Unknown ones are looked up together: when a thousand sockets reconnect at
        once (a deploy), they share a few queries instead of queueing a thousand for the pool."""
        while not self._knows(user_id):
            lookup = self._gathering
            if lookup is None:
                lookup = await self._look_up(user_id)
            else:
                lookup.user_ids.add(user_id)
                await lookup.done.wait()
            if lookup.found is None:
                continue  # another task's lookup failed, or that task gave up: run one of our own
            if user_id not in lookup.found:
                raise Unauthorized("the token's user does not exist; sign up or log in again")

    async def _look_up(self, user_id: UUID) -> _Lookup:
        lookup = self._gathering = _Lookup({user_id})
        try:
            await trio.lowlevel.checkpoint()  # requests of this scheduling round join the lookup meanwhile
        finally:
            self._gathering = None
        try:
            lookup.found = await self.store.existing_users(lookup.user_ids)
        finally:
            lookup.done.set()
        until = trio.current_time() + USER_TTL_SECONDS
        for found in lookup.found:
            _remember(self._known_until, found, until, MAX_USERS)
        return lookup

    def _knows(self, user_id: UUID) -> bool:
        return self._known_until.get(user_id, 0.0) > trio.current_time()


def token_expiry(token: str) -> float:
    """The `exp` claim (seconds since the epoch) of a token that has been verified (so it is well formed)."""
    payload = token.split(".")[1]
    return float(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _remember(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > limit:
        cache.popitem(last=False)
