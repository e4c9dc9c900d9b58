"""POST /signup and POST /login: each opens a session (stories/api/sessions.py has the rest of them).

Logins are throttled per email before any bcrypt work (API.md: 10 failures per 15 minutes, then 429): a token
is taken from the email's login bucket first and given back unless the password turns out wrong, so only
failures count, concurrent attempts cannot exceed the limit, and a throttled email costs no hash. Hashing
itself is bounded by PasswordHasher (503 overloaded).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING, Any

import structlog
from quart import Response, request

from stories.actors.ratelimit import ACTION_LOGIN
from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import deps
from stories.api.json_io import json_response, read_json_object
from stories.api.openapi import (
    DISPLAY_NAME,
    EMAIL,
    PASSWORD,
    SESSION_EXAMPLE,
    USER_LINKS,
    code_answer,
    json_answer,
    ref,
)
from stories.api.validate import display_name, invalid, required_string
from stories.clock import to_millis
from stories.errors import AccountSuspended, Conflict, InvalidCredentials, RateLimited, Unauthorized, Unavailable
from stories.security import new_refresh_token, refresh_token_hash
from stories.store.sessions import SessionStore

if TYPE_CHECKING:
    from uuid import UUID

    from stories.api.deps import AppDeps
    from stories.store.models import User

__all__ = ["blueprint", "login_subject", "normalize_email", "session_body"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("auth", __name__)

MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128
MAX_USER_AGENT_LENGTH = 256


def normalize_email(raw: str) -> str | None:
    """Trimmed and lower-cased, or None when it does not look like an address (API.md's rule:
    one @, a dot in the domain, at most 254 characters; we also refuse white space inside)."""
    email = raw.strip().lower()
    local, at, domain = email.partition("@")
    if (
        not at
        or not local
        or "@" in domain
        or "." not in domain.strip(".")
        or domain.startswith(".")
        or domain.endswith(".")
        or len(email) > MAX_EMAIL_LENGTH
        or any(c.isspace() for c in email)
    ):
        return None
    return email


def login_subject(raw_email: str) -> str:
    """The key of an email's failed-login bucket: the email trimmed and lower-cased (what `normalize_email`
    gives for a valid one, and the same for a malformed one), as a SHA-256 digest, so neither memory nor
    Redis holds addresses or keys of unbounded size."""
    return hashlib.sha256(raw_email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()


def _credentials(body: dict[str, Any]) -> tuple[str, str]:
    return required_string(body, "email"), required_string(body, "password")


def session_body(app: AppDeps, user_id: UUID, session_id: UUID, email: str, refresh_token: str) -> dict[str, Any]:
    """The login response (signup, login and refresh): an access token of the session and its refresh token."""
    return {
        "token": app.tokens.issue(user_id, session_id),
        "user_id": str(user_id),
        "email": email,
        "refresh_token": refresh_token,
        "expires_in": app.settings.jwt_ttl_seconds,
    }


def _user_agent() -> str | None:
    agent = request.headers.get("User-Agent")
    if not agent:
        return None
    # Kept for the sessions list only: bounded, and without what PostgreSQL text cannot hold.
    return agent.replace("\x00", "")[:MAX_USER_AGENT_LENGTH] or None


async def _session(app: AppDeps, user: User, status: int) -> Response:
    """Open a session for a user who just signed up or logged in; the login response."""
    session_id = uuid.uuid4()
    refresh_token = new_refresh_token()
    opened = await SessionStore(app.store.database).open_session(
        session_id, user.id, to_millis(app.clock.now()), _user_agent(), refresh_token_hash(refresh_token)
    )
    if opened is None:
        raise Unauthorized("the account no longer exists")
    if not opened:
        _auth_event("login", "suspended", user_id=str(user.id))
        raise AccountSuspended("this account is suspended")
    return json_response(session_body(app, user.id, session_id, user.email, refresh_token), status)


def _auth_event(action: str, outcome: str, **fields: Any) -> None:
    deps().metrics.auth_events.labels(action=action, outcome=outcome).inc()
    log.info("auth", action=action, outcome=outcome, **fields)


_CREDENTIALS = {"email": EMAIL, "password": PASSWORD}
# The bodies of POST /login and POST /signup, as `login` and `signup` read them.
LOGIN_BODY = {"type": "object", "required": list(_CREDENTIALS), "properties": _CREDENTIALS}
SIGNUP_BODY = {**LOGIN_BODY, "properties": {**_CREDENTIALS, "display_name": DISPLAY_NAME}}


SIGNUP = Route(
    "POST",
    "/signup",
    "signup",
    "auth",
    "Create an account",
    {
        "201": json_answer(ref("Session"), "created: a session for the new user", SESSION_EXAMPLE, links=USER_LINKS),
        "409": code_answer(
            "email_taken",
            "an account with this email (after trimming and lower-casing) exists",
            "an account with this email already exists",
        ),
    },
    errors=(Unavailable,),
    description="Opens a session. Email is trimmed and lower-cased. Passwords: bcrypt; when "
    "more sign-ups and logins wait for hashing than the process finishes in about 5 s, 503 overloaded.",
    body=SIGNUP_BODY,
    body_example={"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"},
    public=True,
    table_answer="`201` session",
)


@blueprint.declare(SIGNUP)
async def signup() -> Response:
    body = await read_json_object()
    raw_email, password = _credentials(body)
    name = display_name(body)
    email = normalize_email(raw_email)
    if email is None:
        raise invalid("email", "must be an email address (one @, a dot in the domain, at most 254 characters)")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise invalid("password", f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    app = deps()
    password_hash = await app.passwords.hash(password)
    user = await app.store.create_user(uuid.uuid4(), email, password_hash, app.clock.now(), name)
    if user is None:
        _auth_event("signup", "email_taken")
        raise Conflict("an account with this email already exists", code="email_taken")
    response = await _session(app, user, 201)
    _auth_event("signup", "ok", user_id=str(user.id))
    return response


LOGIN = Route(
    "POST",
    "/login",
    "login",
    "auth",
    "Log in",
    {
        "200": json_answer(ref("Session"), "logged in", SESSION_EXAMPLE),
        "401": code_answer(
            "invalid_credentials",
            "unknown email or wrong password (the same answer, in comparable time)",
            "email or password is incorrect",
        ),
    },
    errors=(AccountSuspended, RateLimited, Unavailable),
    description="Opens a session. After 10 failed logins for an email within 15 minutes, 429 "
    "rate_limited for that email (existing or not) until Retry-After. A suspended account with the right "
    "password: 403 account_suspended.",
    body=LOGIN_BODY,
    body_example={"email": "ada@example.com", "password": "correct horse battery"},
    public=True,
    table_answer="`200` session",
)


@blueprint.declare(LOGIN)
async def login() -> Response:
    raw_email, password = _credentials(await read_json_object())
    app = deps()
    subject = login_subject(raw_email)
    decision = await app.limiter.acquire(subject, ACTION_LOGIN)
    if not decision.allowed:
        # The same answer whether the account exists or not: the limit reveals nothing.
        app.metrics.rate_limited.labels(action=ACTION_LOGIN).inc()
        _auth_event("login", "rate_limited")
        raise RateLimited("too many failed logins for this email; try again later", retry_after=decision.retry_after)
    # Only a wrong password keeps the token taken above; a success or an answer without a verdict (503
    # overloaded, database down) gives it back. The refund is awaited outside the handler of the error, so a
    # cancel cannot interrupt the unwinding (STYLE R9); a cancelled login keeps its token.
    failure: Exception | None = None
    user: User | None = None
    try:
        user = await _check_password(app, raw_email, password)
    except Exception as error:  # re-raised below, after the refund
        failure = error
    if user is not None or failure is not None:
        await app.limiter.refund(subject, ACTION_LOGIN)
    if failure is not None:
        raise failure
    if user is None:
        _auth_event("login", "invalid_credentials")
        raise InvalidCredentials("email or password is incorrect")
    response = await _session(app, user, 200)
    _auth_event("login", "ok", user_id=str(user.id))
    return response


async def _check_password(app: AppDeps, raw_email: str, password: str) -> User | None:
    """The user whose password this is, or None (unknown email or wrong password, in comparable time)."""
    # A malformed email can match no account: answer as for an unknown one, in the same time.
    email = normalize_email(raw_email)
    user = None if email is None else await app.store.user_by_email(email)
    ok = await app.passwords.verify(password, None if user is None else user.password_hash)
    return user if user is not None and ok else None
