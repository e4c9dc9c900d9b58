"""Passwords (bcrypt, off the event loop) and access tokens (JWT HS256)."""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

import bcrypt
import jwt
import trio

from stories.errors import Unauthorized

if TYPE_CHECKING:
    from stories.clock import Clock

__all__ = ["PasswordHasher", "TokenIssuer"]

JWT_ALGORITHM = "HS256"
# Tokens minted a little in the future by a peer with a fast clock are still accepted.
IAT_LEEWAY_SECONDS = 60


def _prehash(password: str) -> bytes:
    # bcrypt reads at most 72 bytes (and bcrypt>=5 refuses more); a 128-character password can be 512 bytes
    # of UTF-8. Hashing first keeps every character significant; base64 keeps NUL bytes out of bcrypt.
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


@dataclass(slots=True)
class PasswordHasher:
    """bcrypt in worker threads, at most one per core, so a burst of logins queues instead of stalling
    the event loop. Cancellable while queued; a hash already running finishes in its thread."""

    cost: int
    limiter: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(os.cpu_count() or 2))
    _dummy: bytes | None = None

    async def hash(self, password: str) -> str:
        salt = bcrypt.gensalt(rounds=self.cost)
        hashed = await trio.to_thread.run_sync(bcrypt.hashpw, _prehash(password), salt, limiter=self.limiter)
        return hashed.decode("ascii")

    async def verify(self, password: str, password_hash: str | None) -> bool:
        """Check a password; with `password_hash=None` (unknown user) spend the same time and say no."""
        if password_hash is None:
            if self._dummy is None:
                self._dummy = (await self.hash("not a real password")).encode("ascii")
            await trio.to_thread.run_sync(bcrypt.checkpw, _prehash(password), self._dummy, limiter=self.limiter)
            return False
        return await trio.to_thread.run_sync(
            bcrypt.checkpw, _prehash(password), password_hash.encode("ascii"), limiter=self.limiter
        )


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    """Mints and checks HS256 tokens with claims sub, iat, exp; time comes from the injected clock."""

    secret: str
    ttl_seconds: int
    clock: Clock

    def issue(self, user_id: UUID) -> str:
        now = self.clock.now()
        claims = {
            "sub": str(user_id),
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self.ttl_seconds)).timestamp()),
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM)

    def verify(self, token: str) -> UUID:
        """The user id in a valid token; `Unauthorized` naming the problem otherwise."""
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
        exp, iat, sub = claims["exp"], claims["iat"], claims["sub"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float) or not isinstance(sub, str):
            raise Unauthorized("the token is malformed")
        if exp <= now:
            raise Unauthorized("the token has expired; log in again")
        if iat > now + IAT_LEEWAY_SECONDS:
            raise Unauthorized("the token is not valid yet")
        try:
            return UUID(sub)
        except ValueError:
            raise Unauthorized("the token is malformed") from None
