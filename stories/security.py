"""Passwords (bcrypt, off the event loop) and access tokens (JWT HS256)."""

from __future__ import annotations

import base64
import hashlib
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, NamedTuple, TypeVar
from uuid import UUID

import bcrypt
import jwt
import structlog
import trio

from stories.errors import Overloaded, Unauthorized

if TYPE_CHECKING:
    from collections.abc import Callable

    from stories.clock import Clock

__all__ = [
    "DEFAULT_HASH_QUEUE_SECONDS",
    "Claims",
    "PasswordHasher",
    "TokenIssuer",
    "default_hash_threads",
    "new_refresh_token",
    "refresh_token_hash",
]

log = structlog.get_logger()

T = TypeVar("T")

JWT_ALGORITHM = "HS256"
# Tokens minted a little in the future by a peer with a fast clock are still accepted.
IAT_LEEWAY_SECONDS = 60
# API.md: refresh tokens carry at least 256 random bits.
REFRESH_TOKEN_BYTES = 32
# API.md: sign-ups and logins beyond what the process can hash in about 5 s are refused with 503.
DEFAULT_HASH_QUEUE_SECONDS = 5.0


def _prehash(password: str) -> bytes:
    # bcrypt reads at most 72 bytes (and bcrypt>=5 refuses more); a 128-character password can be 512 bytes
    # of UTF-8. Hashing first keeps every character significant; base64 keeps NUL bytes out of bcrypt.
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def default_hash_threads() -> int:
    """One thread fewer than the cores, so a burst of bcrypt never starves the event loop (at least one)."""
    return max(1, (os.cpu_count() or 1) - 1)


def _timed_dummy_hash(cost: int) -> tuple[bytes, float]:
    # Timed here, in the worker thread, so queueing is not counted; a perf counter because this measures CPU
    # work, which trio's clock (a MockClock in tests) does not see.
    started = time.perf_counter()
    dummy = bcrypt.hashpw(_prehash(secrets.token_urlsafe(16)), bcrypt.gensalt(rounds=cost))
    return dummy, time.perf_counter() - started


@dataclass(slots=True)
class PasswordHasher:
    """bcrypt in `threads` worker threads (default: one fewer than the cores), behind a bounded queue.

    Bounded: at most `max_waiting` hashes and checks may be queued or running, about `queue_seconds` of
    work at the measured `hash_seconds`; one more raises `Overloaded` (503, Retry-After: the seconds the
    queue needs to drain) at once instead of queueing without limit.
    Timing: an unknown email is checked against a dummy hash made at the same cost, so it costs exactly one
    bcrypt check, like a known one.
    Start-up: `await prepare()` once at start measures the hash time and builds the dummy (one hash, ~0.25 s
    at cost 12); an unprepared hasher prepares itself on first use. `hash_seconds` may be given (tests).
    Cancellation: cancellable while queued; a hash already running finishes in its thread.
    """

    cost: int
    threads: int = field(default_factory=default_hash_threads)
    queue_seconds: float = DEFAULT_HASH_QUEUE_SECONDS
    hash_seconds: float | None = None
    limiter: trio.CapacityLimiter = field(init=False, repr=False)
    waiting: int = field(default=0, init=False)
    _dummy: bytes | None = field(default=None, init=False, repr=False)
    _preparing: trio.Lock = field(default_factory=trio.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1 (got {self.threads})")
        self.limiter = trio.CapacityLimiter(self.threads)

    @property
    def prepared(self) -> bool:
        return self._dummy is not None and self.hash_seconds is not None

    @property
    def dummy_hash(self) -> bytes:
        """The hash unknown emails are checked against (RuntimeError before `prepare`)."""
        if self._dummy is None:
            raise RuntimeError("PasswordHasher.prepare() has not run")
        return self._dummy

    @property
    def max_waiting(self) -> int:
        """How many hashes and checks may be queued or running: about `queue_seconds` of work, never fewer
        than the threads. Before the hash time is known, only the threads' worth."""
        if self.hash_seconds is None:
            return self.threads
        return max(self.threads, math.floor(self.queue_seconds * self.threads / self.hash_seconds))

    async def prepare(self) -> None:
        """Measure one hash at `cost` and build the dummy hash. Idempotent; blocks for one hash."""
        async with self._preparing:
            if self._dummy is not None:
                return
            dummy, seconds = await trio.to_thread.run_sync(_timed_dummy_hash, self.cost, limiter=self.limiter)
            self._dummy = dummy
            if self.hash_seconds is None:
                self.hash_seconds = max(seconds, 1e-6)
        log.info(
            "passwords.prepared",
            cost=self.cost,
            hash_ms=round(self.hash_seconds * 1000, 1),
            threads=self.threads,
            max_waiting=self.max_waiting,
        )

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(rounds=self.cost)
        hashed = await self._in_thread(bcrypt.hashpw, _prehash(password), salt)
        return hashed.decode("ascii")

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check a password; with `password_hash=None` (unknown user) spend the same time and say no."""
        if password_hash is None:
            if not self.prepared:
                await self.prepare()
            await self._in_thread(bcrypt.checkpw, _prehash(password), self.dummy_hash)
            return False
        return await self._in_thread(bcrypt.checkpw, _prehash(password), password_hash.encode("ascii"))

    async def _in_thread(self, work: Callable[[bytes, bytes], T], password: bytes, other: bytes) -> T:
        if not self.prepared:
            await self.prepare()
        if self.waiting >= self.max_waiting:
            raise Overloaded(
                "too many sign-ups and logins are waiting; try again shortly", retry_after=self._drain_seconds()
            )
        # Counted synchronously with the check above: no await in between, so the bound holds under trio.
        self.waiting += 1
        try:
            return await trio.to_thread.run_sync(work, password, other, limiter=self.limiter)
        finally:
            self.waiting -= 1

    def _drain_seconds(self) -> int:
        hash_seconds = self.hash_seconds or 1.0
        return max(1, math.ceil(self.waiting * hash_seconds / self.threads))


def new_refresh_token() -> str:
    """An opaque refresh token: 256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(REFRESH_TOKEN_BYTES)


def refresh_token_hash(token: str) -> bytes:
    """What the database keeps of a refresh token. A plain SHA-256 is enough: the token is 256 random bits, so
    there is nothing to guess, and a lookup by hash stays an index probe."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Claims(NamedTuple):
    """What a valid access token says: whose it is and which session issued it."""

    user_id: UUID
    session_id: UUID


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    """Mints and checks HS256 tokens with claims sub, sid, iat, exp; time comes from the injected clock."""

    secret: str
    ttl_seconds: int
    clock: Clock

    def issue(self, user_id: UUID, session_id: UUID) -> str:
        now = self.clock.now()
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> Claims:
        """The user and session of a valid token; `Unauthorized` naming the problem otherwise.

        A token without `sid` was issued before sessions existed: nothing can revoke it, so it is refused (the
        client logs in again) rather than honoured for the rest of its 24 h.
        """
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=[JWT_ALGORITHM],
                # Expiry is checked below against the injected clock, not the machine's.
                options={"require": ["sub", "iat", "exp"], "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            raise Unauthorized("the token's signature is invalid") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("the token is malformed") from None
        now = self.clock.now().timestamp()
        exp, iat, sub, sid = claims["exp"], claims["iat"], claims["sub"], claims.get("sid")
        if not isinstance(exp, int | float) or not isinstance(iat, int | float) or not isinstance(sub, str):
            raise Unauthorized("the token is malformed")
        if exp <= now:
            raise Unauthorized("the token has expired; log in again")
        if iat > now + IAT_LEEWAY_SECONDS:
            raise Unauthorized("the token is not valid yet")
        if sid is None:
            raise Unauthorized("the token predates sessions; log in again")
        try:
            return Claims(UUID(sub), UUID(str(sid)))
        except ValueError:
            raise Unauthorized("the token is malformed") from None
