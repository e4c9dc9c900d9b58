"""Who is calling: a bearer token checked once, its session not revoked and its user allowed in, all known per
process so that the check costs no query on the hot path.

Verifying an HS256 token costs ~100 µs (JSON, base64, HMAC); a client sends the same token for hours, so a
verified token is remembered (its expiry is still checked on every use). Then, from memory:
- its session (`sid`) must not be among the revoked ones (401 session_revoked);
- its user must exist (401) and not be suspended (403 account_suspended). A user's state is looked up once and
  remembered for `USER_TTL_SECONDS`.
What is remembered is kept right by stories/actors/access.py's AccessWatcher: it marks revoked sessions and forgets the
state of users whose account changed, on every process within its poll bound, whoever wrote the change.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar

import orjson
import trio

from stories.errors import AccountSuspended, SessionRevoked, Unauthorized, UserGone

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable
    from uuid import UUID

    from stories.security import Claims, TokenIssuer

__all__ = ["Callers", "UserStore", "bearer_token", "token_expiry"]

MAX_TOKENS = 10_000
MAX_USERS = 50_000
USER_TTL_SECONDS = 300.0

K = TypeVar("K")
V = TypeVar("V")


class _Verified(NamedTuple):
    claims: Claims
    expires_at: float


class _Known(NamedTuple):
    until: float
    suspended: bool


class UserStore(Protocol):
    async def user_states(self, user_ids: Collection[UUID]) -> dict[UUID, bool]:
        """For each of these users that exists: whether they are suspended."""
        ...


@dataclass(slots=True)
class _Lookup:
    """One query for every user whose state was asked during one scheduling round."""

    user_ids: set[UUID]
    done: trio.Event = field(default_factory=trio.Event)
    found: dict[UUID, bool] | None = None


@dataclass(slots=True)
class Callers:
    """Authenticates requests. The caches are bounded LRUs; safe to share between tasks (of one trio run)."""

    tokens: TokenIssuer
    store: UserStore
    _verified: OrderedDict[str, _Verified] = field(default_factory=OrderedDict)
    _known: OrderedDict[UUID, _Known] = field(default_factory=OrderedDict)
    # Revoked session id -> when (epoch seconds) the last token it issued expires; after that it can be dropped.
    _revoked: dict[UUID, float] = field(default_factory=dict)
    _gathering: _Lookup | None = None
    # Bumped whenever a user's state is forgotten: a lookup that ran across a change does not cache its answer.
    _generation: int = 0

    async def authenticate(self, token: str) -> Claims:
        """The caller's user and session; Unauthorized when the token is bad, expired, of a revoked session or
        names no user; AccountSuspended when the user is suspended."""
        verified = self._verified.get(token)
        if verified is None:
            claims = self.tokens.verify(token)
            _remember(self._verified, token, _Verified(claims, token_expiry(token)), MAX_TOKENS)
        else:
            # The signature and claims were checked once; time moves on, so the expiry is checked every time.
            if verified.expires_at <= self.tokens.clock.now().timestamp():
                del self._verified[token]
                raise Unauthorized("the token has expired; log in again")
            self._verified.move_to_end(token)
            claims = verified.claims
        self.check_session(claims.session_id)
        await self._ensure_allowed(claims.user_id)
        # Checked again: the session may have been revoked while the user was looked up.
        self.check_session(claims.session_id)
        return claims

    def check_session(self, session_id: UUID) -> None:
        if session_id in self._revoked:
            raise SessionRevoked("this session was revoked; log in again")

    def revoke(self, session_id: UUID, tokens_expire_at: float) -> None:
        """Refuse this session's tokens from now on (until they would have expired anyway)."""
        self._revoked[session_id] = max(tokens_expire_at, self._revoked.get(session_id, 0.0))

    def revoked_sessions(self) -> int:
        return len(self._revoked)

    def drop_expired_revocations(self, now: float) -> None:
        """Forget revocations whose tokens have all expired (expiry is checked on its own)."""
        for session_id in [sid for sid, until in self._revoked.items() if until <= now]:
            del self._revoked[session_id]

    def forget(self, user_id: UUID) -> None:
        """Look this user's state up again at their next request."""
        self._generation += 1
        self._known.pop(user_id, None)

    def forget_all(self) -> None:
        self._generation += 1
        self._known.clear()

    async def states(self, user_ids: Iterable[UUID]) -> dict[UUID, bool]:
        """For each of these users that exists: whether they are suspended (a query; nothing cached)."""
        return await self.store.user_states(set(user_ids))

    async def _ensure_allowed(self, user_id: UUID) -> None:
        """Known users cost nothing. Unknown ones are looked up together: when a thousand sockets reconnect at
        once (a deploy), they share a few queries instead of queueing a thousand for the pool."""
        while True:
            known = self._known.get(user_id)
            if known is not None and known.until > trio.current_time():
                suspended: bool | None = known.suspended
            else:
                lookup = self._gathering
                if lookup is None:
                    lookup = await self._look_up(user_id)
                else:
                    lookup.user_ids.add(user_id)
                    await lookup.done.wait()
                if lookup.found is None:
                    continue  # the task that ran the lookup was cancelled, or it failed: run one of our own
                suspended = lookup.found.get(user_id)
            if suspended is None:
                raise UserGone()
            if suspended:
                raise AccountSuspended("this account is suspended")
            return

    async def _look_up(self, user_id: UUID) -> _Lookup:
        """Run one lookup for this scheduling round. Whatever happens to this task (a cancel at any await, the
        store failing), `done` is set, so the tasks that joined never wait for a lookup nobody runs: with no
        answer (`found` None) they run one of their own."""
        lookup = self._gathering = _Lookup({user_id})
        generation = self._generation
        try:
            try:
                await trio.lowlevel.checkpoint()  # requests of this scheduling round join the lookup meanwhile
            finally:
                self._gathering = None
            lookup.found = await self.store.user_states(lookup.user_ids)
        finally:
            lookup.done.set()
        if generation == self._generation:
            until = trio.current_time() + USER_TTL_SECONDS
            for found, suspended in lookup.found.items():
                _remember(self._known, found, _Known(until, suspended), MAX_USERS)
        return lookup


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (the scheme in any case); None without the header.
    The one reader of that header: the HTTP routes' hook and the WebSocket upgrade both use it."""
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def token_expiry(token: str) -> float:
    """The `exp` claim (seconds since the epoch) of a token that has been verified (so it is well formed)."""
    payload = token.split(".")[1]
    return float(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])


def _remember(cache: OrderedDict[K, V], key: K, value: V, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    if len(cache) > limit:
        cache.popitem(last=False)
