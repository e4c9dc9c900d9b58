"""DELETE /me and GET /me/export (API.md "Your account and your data").

Confirming a deletion with the password is throttled like a login, in the same budget (stories/api/reauth.py). The
export is streamed section by section
(stories/store/account.py), so a large account costs no more memory than a small one.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import orjson
import structlog
from quart import Response

from stories.actors.ratelimit import ACTION_EXPORT
from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.json_io import JSON_CONTENT_TYPE, read_json_object
from stories.api.openapi import ALICE, AT, BOB, STORY, code_answer, json_answer, ref
from stories.api.rate import check_rate
from stories.api.reauth import confirm_password
from stories.api.validate import required_string
from stories.clock import rfc3339, to_millis
from stories.errors import RateLimited, UserGone
from stories.store.account import EXPORT_SECTIONS, AccountStore
from stories.store.sessions import SessionStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stories.api.deps import AppDeps

__all__ = ["EXPORT_CHUNK_ROWS", "announce_account_deleted", "blueprint"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("account", __name__)

# Rows per query of the export: a chunk's rows and their JSON are all it holds in memory at once.
EXPORT_CHUNK_ROWS = 500
# Bytes of JSON gathered before they are sent: a few chunks' worth, so a small account is one write.
EXPORT_WRITE_BYTES = 256 * 1024


def announce_account_deleted(app: AppDeps, user_id: UUID) -> None:
    """Tell every process the account is gone: its tokens answer 401 here at once, its sockets close, and the
    other processes are told (they would read it from the access log within its poll period anyway: the
    deletion of the user's sessions is logged by a trigger, stories/actors/access.py)."""
    app.access.account_changed(user_id)


DELETE_ME = Route(
    "DELETE",
    "/me",
    "deleteMe",
    "account",
    "Delete your account and everything of it",
    {
        "204": {"description": "erased: the account's tokens answer 401, its email can sign up again"},
        "403": code_answer("wrong_password", "the password is wrong", "the password is wrong"),
    },
    errors=(RateLimited,),
    description="Erases, in one transaction, the user, their stories (with audience, views and "
    "reactions), their own views, reactions and audience entries, follows both ways, blocks, mutes, "
    "upload records and events; their media objects are deleted from storage by the next expiry-worker "
    "run. Other users' counters, stats and viewers lists stop counting them. Wrong passwords count "
    "with the email's failed logins: after 10 within 15 minutes, 429 rate_limited until Retry-After.",
    body={
        "type": "object",
        "required": ["password"],
        "properties": {"password": {"type": "string", "description": "your current password"}},
    },
    body_example={"password": "correct horse battery"},
    table_answer="`204` account erased",
)


@blueprint.declare(DELETE_ME)
async def delete_me() -> Response:
    password = required_string(await read_json_object(), "password")
    app = deps()
    user_id = current_user_id()
    account = await SessionStore(app.store.database).account(user_id)
    if account is None:
        raise UserGone()
    await confirm_password(app, account, password, "delete_account")
    deleted = await AccountStore(app.store.database).delete(user_id, to_millis(app.clock.now()))
    if deleted is None:
        raise UserGone()
    announce_account_deleted(app, user_id)
    # Feed and tray pages cached for other users may hold the user's live stories: each gets a deletion mark.
    await app.feeds.stories_hidden(deleted.live_story_ids)
    app.metrics.auth_events.labels(action="delete_account", outcome="ok").inc()
    log.info("account_deleted", user_id=str(user_id), live_stories=len(deleted.live_story_ids))
    return Response(b"", 204)


def _plain(value: Any) -> Any:
    """A database value as the API writes it: times in RFC 3339 (UTC, Z), ids as text."""
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return rfc3339(value)
    return value


def _row_json(row: dict[str, Any]) -> bytes:
    return orjson.dumps({name: _plain(value) for name, value in row.items()})


async def _export_body(
    accounts: AccountStore, user_id: UUID, profile: dict[str, Any], now: datetime
) -> AsyncIterator[bytes]:
    """The document, written as it is read: the profile, then each section as a list filled one chunk at a
    time, sent in pieces of about EXPORT_WRITE_BYTES (one ASGI message per piece, not per row). A failure half way
    (the database gone) ends the body early, so the client gets invalid JSON, never a document that looks whole
    but is not."""
    pending: list[bytes] = [b'{"exported_at":', orjson.dumps(rfc3339(now)), b',"profile":', _row_json(profile)]
    size = 0
    for section in EXPORT_SECTIONS:
        pending.append(b"," + orjson.dumps(section.name) + b":[")
        after, first = section.start, True
        while True:
            rows = await accounts.chunk(section, user_id, after, EXPORT_CHUNK_ROWS)
            for row in rows:
                piece = _row_json(row)
                pending.append(piece if first else b"," + piece)
                size += len(piece)
                first = False
            if rows:
                after = tuple(rows[-1][column] for column in section.key)
            if size >= EXPORT_WRITE_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
            if len(rows) < EXPORT_CHUNK_ROWS:
                break
        pending.append(b"]")
    pending.append(b"}")
    yield b"".join(pending)


EXPORT_ME = Route(
    "GET",
    "/me/export",
    "exportMe",
    "account",
    "Everything the service stores about you, as one JSON document",
    {
        "200": json_answer(
            ref("Export"),
            "the document, streamed (offered as a download: stories-export.json)",
            {
                "exported_at": AT,
                "profile": {
                    "user_id": ALICE,
                    "email": "ada@example.com",
                    "display_name": "Ada",
                    "created_at": AT,
                    "followers_count": 1,
                    "following_count": 1,
                },
                "sessions": [
                    {
                        "session_id": STORY,
                        "created_at": AT,
                        "last_used_at": AT,
                        "user_agent": "StoriesApp/1.0",
                        "revoked_at": None,
                    }
                ],
                "stories": [],
                "views": [{"story_id": STORY, "viewed_at": AT}],
                "reactions": [],
                "following": [{"user_id": BOB, "followed_at": AT}],
                "followers": [{"user_id": BOB, "followed_at": AT}],
                "blocks": [],
                "mutes": [],
                "reports": [],
                "uploads": [],
            },
        )
    },
    errors=(RateLimited,),
    description="Your profile, your sessions, your stories (expired and deleted ones still kept, with "
    "their audience), your views and reactions, follows both ways, blocks, mutes, the reports you "
    "filed and upload records; no token or password material. Limited to 1 per 10 minutes "
    "(429 rate_limited with Retry-After). The body is streamed: a response cut short (the database "
    "lost half way) is not valid JSON.",
    table_answer="`200` everything stored about you (one JSON document, streamed)",
)


@blueprint.declare(EXPORT_ME)
async def export_me() -> Response:
    app = deps()
    user_id = current_user_id()
    await check_rate(ACTION_EXPORT, "exporting your data")
    accounts = AccountStore(app.store.database)
    profile = await accounts.profile(user_id)
    if profile is None:
        raise UserGone()
    log.info("account_exported", user_id=str(user_id))
    return Response(
        _export_body(accounts, user_id, profile, app.clock.now()),
        200,
        content_type=JSON_CONTENT_TYPE,
        headers={"Content-Disposition": 'attachment; filename="stories-export.json"'},
    )
