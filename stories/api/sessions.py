"""Sessions (API.md "Sessions" under Auth): refresh, logout, the sessions list, revoking one, a password change.

Every signup and login opens a session (`open_session`); its access tokens carry `sid`, and its refresh token
rotates on every use. Revocations are written to the database and made to hold on every process by
stories/actors/access.py; this process applies them at once (`access.session_revoked`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

import structlog
from quart import Response

from stories.api.auth import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, session_body
from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_session_id, current_user_id, deps
from stories.api.json_io import json_response, read_json_object
from stories.api.openapi import AT, PASSWORD, SESSION_EXAMPLE, SESSION_ID, error_answer, error_example, json_answer, ref
from stories.api.reauth import confirm_password
from stories.api.validate import invalid, required_string
from stories.clock import rfc3339, to_millis
from stories.errors import (
    AccountSuspended,
    InvalidRefreshToken,
    NotFound,
    RateLimited,
    SessionRevoked,
    Unavailable,
    UserGone,
)
from stories.security import new_refresh_token, refresh_token_hash
from stories.store.sessions import RefreshOutcome, SessionStore

if TYPE_CHECKING:
    from uuid import UUID

    from stories.store.sessions import SessionInfo

__all__ = ["blueprint"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("sessions", __name__)

# A refresh token is 43 characters; anything much longer is no token of ours, and is not hashed.
MAX_REFRESH_TOKEN_LENGTH = 512


REFRESH_TOKEN = Route(
    "POST",
    "/token/refresh",
    "refreshToken",
    "auth",
    "Trade a refresh token for a new token and a new refresh token (rotation)",
    {
        "200": json_answer(ref("Session"), "refreshed: the old refresh token is used up", SESSION_EXAMPLE),
        "401": error_answer(
            "invalid_refresh_token: unknown or expired; session_revoked: the token was used already "
            "(its whole session is revoked now), or its session was revoked",
            ("invalid_refresh_token", "session_revoked"),
            error_example("session_revoked", "this session was revoked; log in again"),
        ),
    },
    errors=(AccountSuspended, Unavailable),
    description="A refresh token works once. Presenting one that was used already revokes its session "
    "(a stolen token was used), so of two concurrent refreshes with one token exactly one succeeds and "
    "the session is revoked: refresh from one place at a time.",
    body={
        "type": "object",
        "required": ["refresh_token"],
        "properties": {"refresh_token": {"type": "string"}},
    },
    body_example={"refresh_token": SESSION_EXAMPLE["refresh_token"]},
    public=True,
    table_answer="`200` session (the refresh token rotates)",
)


@blueprint.declare(REFRESH_TOKEN)
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


LOGOUT = Route(
    "POST",
    "/logout",
    "logout",
    "auth",
    "Sign out: revoke this token's session",
    {"204": {"description": "signed out"}},
    description="The session's tokens and refresh token answer 401 session_revoked on every process "
    "within 1 s; its open WebSockets close with 1008.",
    table_answer="`204` (this token's session is revoked)",
)


@blueprint.declare(LOGOUT)
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


LIST_SESSIONS = Route(
    "GET",
    "/me/sessions",
    "listSessions",
    "auth",
    "Your active sessions, most recently used first",
    {
        "200": json_answer(
            ref("SessionList"),
            "your sessions",
            {
                "sessions": [
                    {
                        "session_id": SESSION_ID,
                        "created_at": AT,
                        "last_used_at": AT,
                        "user_agent": "Stories/1.0 (iPhone)",
                        "current": True,
                    }
                ]
            },
        )
    },
    description="Active: not revoked, and refreshed (or opened) within REFRESH_TOKEN_DAYS.",
    table_answer="`200` your active sessions",
)


@blueprint.declare(LIST_SESSIONS)
async def my_sessions() -> Response:
    app = deps()
    since = app.clock.now() - timedelta(days=app.settings.refresh_token_days)
    sessions = await SessionStore(app.store.database).active(current_user_id(), since)
    current = current_session_id()
    return json_response({"sessions": [_session_json(session, current) for session in sessions]})


REVOKE_SESSION = Route(
    "DELETE",
    "/me/sessions/{session_id}",
    "revokeSession",
    "auth",
    "Revoke one of your sessions (idempotent)",
    {"204": {"description": "revoked"}},
    description="Another user's session, an unknown or a malformed id: 404.",
    parameters=[
        {
            "name": "session_id",
            "in": "path",
            "required": True,
            "description": "a session_id from GET /me/sessions (a malformed id answers 404)",
            "schema": {"type": "string", "format": "uuid"},
            "example": SESSION_ID,
        }
    ],
    table_answer="`204` (that session is revoked)",
)


@blueprint.declare(REVOKE_SESSION)
async def revoke_session(session_id: UUID) -> Response:
    target = session_id
    app = deps()
    if not await SessionStore(app.store.database).revoke(current_user_id(), target, to_millis(app.clock.now())):
        raise NotFound("no such session")
    app.access.session_revoked(target)
    log.info("auth", action="revoke_session", outcome="ok", session_id=str(target))
    return Response(b"", 204)


CHANGE_PASSWORD = Route(
    "POST",
    "/me/password",
    "changePassword",
    "auth",
    "Change your password; every other session is revoked",
    {
        "204": {"description": "changed"},
        "403": error_answer(
            "wrong_password: the current password is wrong; account_suspended",
            ("wrong_password", "account_suspended"),
            error_example("wrong_password", "the password is wrong"),
        ),
    },
    errors=(RateLimited,),
    description="Wrong current passwords count against the account's email in the login throttle "
    "(10 per 15 minutes, then 429). The session of this request stays signed in.",
    body={
        "type": "object",
        "required": ["current_password", "new_password"],
        "properties": {"current_password": {"type": "string"}, "new_password": PASSWORD},
    },
    body_example={"current_password": "correct horse battery", "new_password": "battery staple horse"},
    table_answer="`204` (every other session is revoked)",
)


@blueprint.declare(CHANGE_PASSWORD)
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
        raise UserGone()
    await confirm_password(app, account, current_password, "change_password")
    password_hash = await app.passwords.hash(new_password)
    revoked = await sessions.change_password(user_id, session_id, password_hash, to_millis(app.clock.now()))
    for other in revoked:
        app.access.session_revoked(other)
    log.info("auth", action="change_password", outcome="ok", sessions_revoked=len(revoked))
    return Response(b"", 204)
