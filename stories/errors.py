"""The domain's exceptions. Each API-facing one carries its HTTP status and stable error code.

    StoriesError
     ├── ConfigError               a setting is invalid: the CLI prints it and exits 2
     └── ApiError                  answered with API.md's error body
          ├── InvalidRequest       400 invalid_request (optional per-field details)
          │    └── MediaNotUploaded 400 media_not_uploaded: the store answers, and the object is not there
          ├── Unauthorized         401 unauthorized
          │    ├── SessionRevoked   401 session_revoked: the token's session was revoked (logout, reuse ...)
          │    └── InvalidRefreshToken 401 invalid_refresh_token: unknown or expired refresh token
          ├── InvalidCredentials   401 invalid_credentials
          ├── Forbidden            403 (code names why: account_suspended, wrong_password)
          │    └── AccountSuspended 403 account_suspended
          ├── NotFound             404 not_found
          ├── Conflict             409 (code names the conflict, e.g. email_taken)
          ├── IdempotencyKeyReused 422 idempotency_key_reused
          ├── RateLimited          429 rate_limited (+ Retry-After)
          └── Unavailable          503 (code names the dependency)
               ├── StoreUnavailable  503 database_unavailable
               ├── StorageUnavailable 503 storage_unavailable: object storage off, down or refusing us
               └── Overloaded        503 overloaded (+ Retry-After): a bounded queue or deadline was hit

The store raises these directly (it opens no nurseries, so they reach the handlers unwrapped).
"""

from __future__ import annotations

__all__ = [
    "AccountSuspended",
    "ApiError",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidCredentials",
    "InvalidRefreshToken",
    "InvalidRequest",
    "MediaNotUploaded",
    "NotFound",
    "Overloaded",
    "RateLimited",
    "SessionRevoked",
    "StorageUnavailable",
    "StoreUnavailable",
    "StoriesError",
    "Unauthorized",
    "Unavailable",
    "UserGone",
]


class StoriesError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(StoriesError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable} {problem}")
        self.variable = variable
        self.problem = problem


class ApiError(StoriesError):
    """An error answered with API.md's body. A subclass names its status and code in its bases:
    `class NotFound(ApiError, status=404, code="not_found")`; one that gives only `code` keeps its parent's status.
    """

    status: int = 400
    code: str = "invalid_request"

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(ApiError, status=400, code="invalid_request"):
    def __init__(self, message: str, *, fields: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.fields = fields


class MediaNotUploaded(InvalidRequest, code="media_not_uploaded"): ...


class Unauthorized(ApiError, status=401, code="unauthorized"): ...


class UserGone(Unauthorized):
    """A valid token whose user does not exist (any more): the account was deleted since."""

    def __init__(self) -> None:
        super().__init__("the token's user does not exist; sign up or log in again")


class SessionRevoked(Unauthorized, code="session_revoked"): ...


class InvalidRefreshToken(Unauthorized, code="invalid_refresh_token"): ...


class InvalidCredentials(ApiError, status=401, code="invalid_credentials"): ...


class Forbidden(ApiError, status=403, code="forbidden"): ...


class AccountSuspended(Forbidden, code="account_suspended"): ...


class NotFound(ApiError, status=404, code="not_found"): ...


class Conflict(ApiError, status=409, code="conflict"): ...


class IdempotencyKeyReused(ApiError, status=422, code="idempotency_key_reused"): ...


class RateLimited(ApiError, status=429, code="rate_limited"):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ApiError, status=503, code="unavailable"): ...


class StoreUnavailable(Unavailable, code="database_unavailable"): ...


class StorageUnavailable(Unavailable, code="storage_unavailable"): ...


class Overloaded(Unavailable, code="overloaded"):
    """Load shedding: a queue is full or a deadline passed. The client should retry after `retry_after`."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
