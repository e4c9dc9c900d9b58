"""POST /signup and POST /login."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import structlog
from quart import Blueprint, Response

from stories.api.bodies import json_response, read_json_object
from stories.api.deps import deps
from stories.api.validate import invalid, required_string
from stories.errors import Conflict, InvalidCredentials

if TYPE_CHECKING:
    from stories.store.models import User

__all__ = ["blueprint", "normalize_email"]

log = structlog.get_logger()
blueprint = Blueprint("auth", __name__)

MAX_EMAIL_LENGTH = 254
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 128


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


def _credentials(body: dict[str, Any]) -> tuple[str, str]:
    return required_string(body, "email"), required_string(body, "password")


def _session(user: User, status: int) -> Response:
    token = deps().tokens.issue(user.id)
    return json_response({"token": token, "user_id": str(user.id), "email": user.email}, status)


def _auth_event(action: str, outcome: str, **fields: Any) -> None:
    deps().metrics.auth_events.labels(action=action, outcome=outcome).inc()
    log.info("auth", action=action, outcome=outcome, **fields)


@blueprint.post("/signup")
async def signup() -> Response:
    raw_email, password = _credentials(await read_json_object())
    email = normalize_email(raw_email)
    if email is None:
        raise invalid("email", "must be an email address (one @, a dot in the domain, at most 254 characters)")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise invalid("password", f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    app = deps()
    password_hash = await app.passwords.hash(password)
    user = await app.store.create_user(uuid.uuid4(), email, password_hash, app.clock.now())
    if user is None:
        _auth_event("signup", "email_taken")
        raise Conflict("an account with this email already exists", code="email_taken")
    _auth_event("signup", "ok", user_id=str(user.id))
    return _session(user, 201)


@blueprint.post("/login")
async def login() -> Response:
    raw_email, password = _credentials(await read_json_object())
    app = deps()
    # A malformed email can match no account: answer as for an unknown one, in the same time.
    email = normalize_email(raw_email)
    user = None if email is None else await app.store.user_by_email(email)
    ok = await app.passwords.verify(password, None if user is None else user.password_hash)
    if user is None or not ok:
        _auth_event("login", "invalid_credentials")
        raise InvalidCredentials("email or password is incorrect")
    _auth_event("login", "ok", user_id=str(user.id))
    return _session(user, 200)
