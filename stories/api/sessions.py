"""Sessions (API.md "Sessions" under Auth): refresh, logout, the sessions list, revoking one, a password change.

Every signup and login opens a session (`open_session`); its access tokens carry `sid`, and its refresh token
rotates on every use. Revocations are written to the database and made to hold on every process by
stories/actors/access.py; this process applies them at once (`access.session_revoked`).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from quart import Blueprint, Response

from stories.api.auth import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, session_body
from stories.api.bodies import json_response, read_json_object
from stories.api.deps import current_session_id, current_user_id, deps
from stories.api.reauth import confirm_password
from stories.api.validate import invalid, required_string
from stories.clock import rfc3339, to_millis
from stories.errors import (
    AccountSuspended,
    InvalidRefreshToken,
    NotFound,
    SessionRevoked,
    Unauthorized,
)
from stories.security import new_refresh_token, refresh_token_hash
from stories.store.sessions import RefreshOutcome, SessionStore

if TYPE_CHECKING:
    from uuid import UUID

    from stories.store.sessions import SessionInfo

__all__ = ["blueprint"]

log = structlog.get_logger()
blueprint = Blueprint("sessions", __name__)

# A refresh token is 43 characters; anything much longer is no token of ours, and is not hashed.
MAX_REFRESH_TOKEN_LENGTH = 512


@blueprint.post("/token/refresh")
async def refresh() -> Response:
    presented = required_string(await read_json_object(), "refresh_token")
    if len(presented) > MAX_REFRESH_TOKEN_LENGTH:
        raise InvalidRefreshToken("unknown or expired refresh token; log in again")
    app = deps()
    fresh = new_refresh_token()
    result = await SessionStore(app.store.database).refresh(
        refresh_token_hash(presented),
        refresh_token_hash(fresh),
        to_millis(app.clock.now()),
        timedelta(days=app.settings.refresh_token_days),
    )
    if result.outcome is RefreshOutcome.REUSED:
        assert result.session_id is not None
        app.access.session_revoked(result.session_id)
        log.warning("auth", action="refresh", outcome="reused", session_id=str(result.session_id))
        raise SessionRevoked("this refresh token was used already: its session is revoked; log in again")
    if result.outcome is RefreshOutcome.REVOKED:
        raise SessionRevoked("this session was revoked; log in again")
    if result.outcome is RefreshOutcome.SUSPENDED:
        raise AccountSuspended("this account is suspended")
    if result.outcome is RefreshOutcome.INVALID:
        raise InvalidRefreshToken("unknown or expired refresh token; log in again")
    assert result.user_id is not None
    assert result.session_id is not None
    assert result.email is not None
    log.info("auth", action="refresh", outcome="ok", user_id=str(result.user_id))
    return json_response(session_body(app, result.user_id, result.session_id, result.email, fresh))


@blueprint.post("/logout")
async def logout() -> Response:
    app = deps()
    session_id = current_session_id()
    await SessionStore(app.store.database).revoke(current_user_id(), session_id, to_millis(app.clock.now()))
    app.access.session_revoked(session_id)
    log.info("auth", action="logout", outcome="ok", session_id=str(session_id))
    return Response(b"", 204)


def _session_json(session: SessionInfo, current: UUID) -> dict[str, Any]:
    return {
        "session_id": str(session.session_id),
        "created_at": rfc3339(session.created_at),
        "last_used_at": rfc3339(session.last_used_at),
        "user_agent": session.user_agent,
        "current": session.session_id == current,
    }


@blueprint.get("/me/sessions")
async def my_sessions() -> Response:
    app = deps()
    since = app.clock.now() - timedelta(days=app.settings.refresh_token_days)
    sessions = await SessionStore(app.store.database).active(current_user_id(), since)
    current = current_session_id()
    return json_response({"sessions": [_session_json(session, current) for session in sessions]})


@blueprint.delete("/me/sessions/<session_id>")
async def revoke_session(session_id: str) -> Response:
    try:
        target = uuid.UUID(session_id)
    except ValueError:
        raise NotFound("no such session") from None
    app = deps()
    if not await SessionStore(app.store.database).revoke(current_user_id(), target, to_millis(app.clock.now())):
        raise NotFound("no such session")
    app.access.session_revoked(target)
    log.info("auth", action="revoke_session", outcome="ok", session_id=str(target))
    return Response(b"", 204)


@blueprint.post("/me/password")
async def change_password() -> Response:
    body = await read_json_object()
    current_password = required_string(body, "current_password")
    new_password = required_string(body, "new_password")
    if not MIN_PASSWORD_LENGTH <= len(new_password) <= MAX_PASSWORD_LENGTH:
        raise invalid("new_password", f"must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
    app = deps()
    sessions = SessionStore(app.store.database)
    user_id, session_id = current_user_id(), current_session_id()
    account = await sessions.account(user_id)
    if account is None:
        raise Unauthorized("the token's user does not exist; sign up or log in again")
    await confirm_password(app, account, current_password, "change_password")
    password_hash = await app.passwords.hash(new_password)
    revoked = await sessions.change_password(user_id, session_id, password_hash, to_millis(app.clock.now()))
    for other in revoked:
        app.access.session_revoked(other)
    log.info("auth", action="change_password", outcome="ok", sessions_revoked=len(revoked))
    return Response(b"", 204)
