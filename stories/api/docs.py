"""GET /openapi.json (OpenAPI 3.1 of every route this build serves), GET /docs (Swagger UI) and its files.

The browser is Swagger UI as the pinned `flask-swagger-ui` package ships it (only its static files are used,
not its Flask blueprint): served from this process under /docs/static/, so /docs works without the internet.
tests/api/test_docs.py keeps the document equal to the app's routes and valid OpenAPI; .ci/run fuzzes a real
server against it with Schemathesis (CONTRIBUTING.md says how to run that locally).
"""

from __future__ import annotations

import functools
import hashlib
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quart import Blueprint, Response, request

from stories import __version__
from stories.api.admin import ACTIONS, DEFAULT_AUDIT_LIMIT, DEFAULT_REPORTS_LIMIT, STATUSES
from stories.api.bodies import json_response
from stories.api.deps import deps
from stories.api.events import MAX_EVENTS_LIMIT
from stories.api.media import CONTENT_TYPES, MAX_FILE_NAME_LENGTH
from stories.api.paging import MAX_LIMIT
from stories.api.profiles import DEFAULT_LIST_LIMIT
from stories.api.reports import MAX_NOTE_LENGTH, REPORT_REASONS
from stories.api.stories import (
    DEFAULT_FEED_LIMIT,
    DEFAULT_VIEWERS_LIMIT,
    MAX_AUDIENCE,
    MAX_FEED_LIMIT,
    MAX_MEDIA_KEY_LENGTH,
    MAX_TEXT_LENGTH,
)
from stories.api.tray import DEFAULT_TRAY_LIMIT, MAX_TRAY_LIMIT
from stories.api.validate import MAX_DISPLAY_NAME_LENGTH
from stories.domain import REACTION_EMOJIS
from stories.errors import NotFound
from stories.media.storage import UPLOAD_URL_SECONDS

if TYPE_CHECKING:
    from stories.settings import Settings

__all__ = ["SWAGGER_UI_FILES", "blueprint", "openapi_document"]

blueprint = Blueprint("docs", __name__)

# The files of the Swagger UI distribution that /docs loads, with the type each is served as. Nothing else of the
# package is served: the path parameter of /docs/static/{file} is this list.
SWAGGER_UI_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
# Browsers may keep the files for a day: they change only with the pinned package.
SWAGGER_UI_CACHE_SECONDS = 86_400


def _swagger_ui_dist() -> Path:
    return Path(str(files("flask_swagger_ui") / "dist"))


# ---------------------------------------------------------------------------------------------------------------
# Building blocks of the document

_UUID = {"type": "string", "format": "uuid", "examples": ["0b5a3f4e-6c1d-4e8a-9f1e-2d3c4b5a6f70"]}
_TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
    "description": "RFC 3339, UTC, milliseconds",
    "examples": ["2026-11-24T10:00:00.123Z"],
}
_COUNT = {"type": "integer", "minimum": 0}
_CURSOR = {"type": ["string", "null"], "description": "pass as ?cursor= for the next page; null on the last page"}
_DISPLAY_NAME = {
    "type": ["string", "null"],
    "minLength": 1,
    "maxLength": MAX_DISPLAY_NAME_LENGTH,
    "description": f"1 to {MAX_DISPLAY_NAME_LENGTH} characters after trimming, no control characters; null: none",
    "examples": ["Ada"],
}
_VISIBILITY = {"enum": ["public", "friends", "private"]}

ALICE = "0b5a3f4e-6c1d-4e8a-9f1e-2d3c4b5a6f70"
BOB = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
STORY = "3c9d1e2f-7a8b-4c5d-9e0f-1a2b3c4d5e6f"
AT = "2026-11-24T10:00:00.123Z"
CURSOR = "MTc2Mzk3ODQwMDEyMzAwMDozYzlkMWUyZi03YThiLTRjNWQtOWUwZi0xYTJiM2M0ZDVlNmY"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A response object: exactly these properties, all present but `optional`."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str, example: Any = None, **extra: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}, **extra}


def _page(items: str, entry: dict[str, Any]) -> dict[str, Any]:
    return _object({items: {"type": "array", "items": entry}, "next_cursor": _CURSOR})


def _user_list(at_field: str) -> dict[str, Any]:
    return _page("users", _object({"user_id": _UUID, "display_name": _DISPLAY_NAME, at_field: _TIME}))


def _paging(default: int, maximum: int = MAX_LIMIT) -> list[dict[str, Any]]:
    return [
        {
            "name": "limit",
            "in": "query",
            "description": f"page size, 1 to {maximum} (400 outside)",
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "next_cursor of the page before (opaque; 400 when it is not one this API issued)",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
            "example": CURSOR,
        },
    ]


# An event id: 32 lower-case hex digits, ordered as strings.
_EVENT_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
_AFTER_PARAM = {
    "name": "after",
    "in": "query",
    "description": "the id of the last event you have seen (400 when malformed; one the log no longer holds, or "
    'not yours, gives {"type": "resync"})',
    "schema": _EVENT_ID,
    "example": "000000000000030a0000000000000003",
}
EVENT_EXAMPLE = {
    "type": "story.reacted",
    "id": "000000000000030a0000000000000003",
    "payload": {"story_id": STORY, "user_id": BOB, "emoji": "🔥", "created_at": AT},
}


def _path_id(name: str, what: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": f"the {what}'s id (a malformed id answers 404, as an unknown one)",
            "schema": {"type": "string", "format": "uuid"},
            "example": BOB if what == "user" else STORY,
        }
    ]


def _error_example(code: str, message: str, **fields: str) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return body


def _error(
    description: str, codes: tuple[str, ...], example: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    schema = {
        "allOf": [_ref("Error"), {"type": "object", "properties": {"error": {"enum": list(codes)}}}],
    }
    response = _json(schema, description, example)
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}
_WWW_AUTHENTICATE = {"description": 'Bearer realm="stories"', "schema": {"type": "string"}}


def _error_responses(settings: Settings) -> dict[str, Any]:
    """components.responses: the error answers API.md's Conventions list, one per status and meaning."""
    max_body = settings.max_body_bytes
    return {
        "BadRequest": _error(
            "invalid_request: malformed JSON, wrong types or invalid values (`fields` names the culprits)",
            ("invalid_request",),
            _error_example("invalid_request", "limit: must be a whole number from 1 to 100", limit="invalid"),
        ),
        "Unauthorized": _error(
            "unauthorized: a missing, malformed, expired or badly signed token, one issued before sessions (no "
            "sid), or one whose user does not exist; session_revoked: the token's session was revoked (logout, "
            "a password change, a revoked session, a reused refresh token) on any process within 1 s",
            ("unauthorized", "session_revoked"),
            _error_example("unauthorized", "missing Authorization: Bearer <token> header"),
            {"WWW-Authenticate": _WWW_AUTHENTICATE},
        ),
        "Suspended": _error(
            "account_suspended: a moderator suspended this account (on every process within 1 s)",
            ("account_suspended",),
            _error_example("account_suspended", "this account is suspended"),
        ),
        "NotFound": _error(
            "not_found: unknown, or not visible to you (a malformed id too)",
            ("not_found",),
            _error_example("not_found", "no such story (it may have expired, or is not visible to you)"),
        ),
        "PayloadTooLarge": _error(
            f"payload_too_large: the body is larger than {max_body} bytes",
            ("payload_too_large",),
            _error_example("payload_too_large", f"the request body is larger than {max_body} bytes"),
        ),
        "UnsupportedMediaType": _error(
            "unsupported_media_type: the body is not sent as JSON",
            ("unsupported_media_type",),
            _error_example("unsupported_media_type", "send the body as JSON with Content-Type: application/json"),
        ),
        "RateLimited": _error(
            "rate_limited: wait Retry-After seconds",
            ("rate_limited",),
            _error_example("rate_limited", "story creation is limited to 20 per minute"),
            {"Retry-After": {**_RETRY_AFTER, "required": True}},
        ),
        "Unavailable": _error(
            "database_unavailable: the database does not answer; overloaded: no database connection within "
            "DB_ACQUIRE_TIMEOUT_SECONDS, or the request ran past REQUEST_TIMEOUT_SECONDS (with Retry-After). "
            "A write answered 503 may still have committed.",
            ("database_unavailable", "overloaded"),
            _error_example("overloaded", "the request took longer than 10 s; retry shortly"),
            {"Retry-After": {**_RETRY_AFTER, "description": "with overloaded: seconds to wait before retrying"}},
        ),
    }


def _responses(*names: str) -> dict[str, Any]:
    statuses = {
        "BadRequest": "400",
        "Unauthorized": "401",
        "Suspended": "403",
        "NotFound": "404",
        "PayloadTooLarge": "413",
        "UnsupportedMediaType": "415",
        "RateLimited": "429",
        "Unavailable": "503",
    }
    return {statuses[name]: {"$ref": f"#/components/responses/{name}"} for name in names}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    responses: dict[str, Any],
    *,
    description: str | None = None,
    body: dict[str, Any] | None = None,
    body_example: Any = None,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if description:
        operation["description"] = description
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if body_example is not None:
            media["example"] = body_example
        operation["requestBody"] = {"required": True, "content": {"application/json": media}}
    if public:
        operation["security"] = []
    operation["responses"] = responses
    return operation


def _links(field: str, targets: dict[str, str]) -> dict[str, Any]:
    """OpenAPI links: `field` of this response is the path parameter of each target operation."""
    return {
        operation_id: {"operationId": operation_id, "parameters": {parameter: f"$response.body#/{field}"}}
        for operation_id, parameter in targets.items()
    }


# ---------------------------------------------------------------------------------------------------------------
# Examples (tests/api/test_docs.py checks each against its schema)

SESSION_EXAMPLE = {
    "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIwYjVhM2Y0ZSJ9.c2lnbmF0dXJl",
    "user_id": ALICE,
    "email": "ada@example.com",
    "refresh_token": "q3Zk8mR1Xy0bW5nVt2LpHc9sJd4fGa7eKu6oNi-QwE_",
    "expires_in": 86400,
}
SESSION_ID = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a"
STORY_EXAMPLE = {
    "id": STORY,
    "author_id": ALICE,
    "author": {"user_id": ALICE, "display_name": "Ada"},
    "text": "Hello from the lake",
    "media_key": None,
    "media_url": None,
    "visibility": "public",
    "created_at": AT,
    "expires_at": "2026-11-25T10:00:00.123Z",
    "view_count": 3,
    "reaction_count": 1,
}
TRAY_EXAMPLE = {
    "authors": [
        {
            "author": {"user_id": ALICE, "display_name": "Ada"},
            "stories": [{**STORY_EXAMPLE, "seen": False}],
            "has_unseen": True,
            "latest_at": AT,
        }
    ],
    "next_cursor": None,
}
USERS_EXAMPLE = {"users": [{"user_id": BOB, "display_name": "Bob", "followed_at": AT}], "next_cursor": None}


_FOLLOW_COUNTS = {"followers": _COUNT, "following": _COUNT}


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route `create_app` serves, with this process's limits."""
    counts = _FOLLOW_COUNTS
    emoji = {"enum": list(REACTION_EMOJIS)}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string", "description": "a stable snake_case code"},
                "message": {"type": "string", "description": "for humans; may change"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "validation errors: the field and what is wrong with it",
                },
            },
            "additionalProperties": False,
        },
        "Session": _object(
            {
                "token": {"type": "string", "description": "HS256 JWT (claims sub, sid, iat, exp)"},
                "user_id": _UUID,
                "email": {"type": "string"},
                "refresh_token": {
                    "type": "string",
                    "minLength": 43,
                    "description": "opaque, 256 random bits; works once (POST /token/refresh); lives "
                    "REFRESH_TOKEN_DAYS from the session's last refresh",
                },
                "expires_in": {"type": "integer", "minimum": 1, "description": "seconds the token is valid"},
            }
        ),
        "SessionList": _object(
            {
                "sessions": {
                    "type": "array",
                    "items": _object(
                        {
                            "session_id": _UUID,
                            "created_at": _TIME,
                            "last_used_at": {**_TIME, "description": "the last login or refresh"},
                            "user_agent": {"type": ["string", "null"], "maxLength": 256},
                            "current": {"type": "boolean", "description": "the session of this request's token"},
                        }
                    ),
                }
            }
        ),
        "Author": _object({"user_id": _UUID, "display_name": _DISPLAY_NAME}),
        "Story": _object(
            {
                "id": _UUID,
                "author_id": _UUID,
                "author": _ref("Author"),
                "text": {"type": ["string", "null"]},
                "media_key": {"type": ["string", "null"]},
                "media_url": {
                    "type": ["string", "null"],
                    "description": "a presigned GET of the media; null without media or object storage",
                },
                "visibility": _VISIBILITY,
                "created_at": _TIME,
                "expires_at": _TIME,
                "view_count": _COUNT,
                "reaction_count": _COUNT,
            }
        ),
        "Feed": _page("stories", _ref("Story")),
        "View": _object({"story_id": _UUID, "viewer_id": _UUID, "viewed_at": _TIME, "first_view": {"type": "boolean"}}),
        "Reaction": _object({"id": _UUID, "story_id": _UUID, "user_id": _UUID, "emoji": emoji, "created_at": _TIME}),
        "Upload": _object(
            {
                "upload_url": {"type": "string", "description": "PUT the file here, once, within expires_in"},
                "method": {"const": "PUT"},
                "headers": _object({"Content-Type": {"enum": list(CONTENT_TYPES)}}),
                "media_key": {"type": "string", "description": "uploads/<your user id>/<random>.<extension>"},
                "expires_in": {"type": "integer", "minimum": 1, "description": "seconds the upload_url stays valid"},
            }
        ),
        "Follow": _object({"follower_id": _UUID, "followee_id": _UUID, "created_at": _TIME}),
        "Block": _object({"blocker_id": _UUID, "blocked_id": _UUID, "created_at": _TIME}),
        "Mute": _object({"muter_id": _UUID, "muted_id": _UUID, "created_at": _TIME}),
        "Stats": _object(
            {
                "posted": _COUNT,
                "views": _COUNT,
                "unique_viewers": _COUNT,
                "reactions": {
                    "type": "object",
                    "propertyNames": emoji,
                    "additionalProperties": _COUNT,
                    "description": "reactions per emoji; emojis without reactions are left out",
                },
            }
        ),
        "Me": _object(
            {
                "user_id": _UUID,
                "email": {"type": "string"},
                "display_name": _DISPLAY_NAME,
                "created_at": _TIME,
                **counts,
            }
        ),
        "Export": {
            "type": "object",
            "required": ["exported_at", "profile"],
            "properties": {
                "exported_at": _TIME,
                "profile": {"type": "object", "description": "your account, email included"},
            },
            "additionalProperties": {
                "type": "array",
                "items": {"type": "object"},
                "description": "one list per kind of data: sessions, stories, views, reactions, following, "
                "followers, blocks, mutes, reports (those you filed), uploads",
            },
        },
        "Profile": _object(
            {
                "user_id": _UUID,
                "display_name": _DISPLAY_NAME,
                "created_at": _TIME,
                **counts,
                "followed_by_me": {"type": "boolean"},
                "follows_me": {"type": "boolean"},
            }
        ),
        "FollowList": _user_list("followed_at"),
        "BlockList": _user_list("blocked_at"),
        "MuteList": _user_list("muted_at"),
        "Viewers": _page(
            "viewers",
            _object(
                {
                    "user_id": _UUID,
                    "display_name": _DISPLAY_NAME,
                    "viewed_at": _TIME,
                    "reactions": {
                        "type": "array",
                        "items": emoji,
                        "description": "this viewer's reactions to the story, oldest first",
                    },
                }
            ),
        ),
        "Event": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["story.viewed", "story.reacted", "resync"]},
                "id": {**_EVENT_ID, "description": "orders your events; absent on resync"},
                "payload": {
                    "type": "object",
                    "description": "story.viewed: story_id, viewer_id, viewed_at; "
                    "story.reacted: story_id, user_id, emoji, created_at; absent on resync",
                },
            },
            "additionalProperties": False,
        },
        "Events": _object(
            {
                "events": {"type": "array", "items": _ref("Event")},
                "next_cursor": {
                    "type": ["string", "null"],
                    "description": "the last event's id when more follow at once (pass as ?after=), else null",
                },
            }
        ),
        "Health": _object(
            {
                "status": {"enum": ["ok", "degraded"], "description": "degraded: a check is down"},
                "checks": _object(
                    {
                        "db": {"enum": ["ok", "down"]},
                        "redis": {"enum": ["ok", "down", "disabled"]},
                        "storage": {"enum": ["ok", "down", "disabled"]},
                    }
                ),
            }
        ),
        "Readiness": _object(
            {
                "status": {"enum": ["ok", "degraded"]},
                "checks": _object(
                    {
                        "db": {"enum": ["ok", "down"]},
                        "redis": {"enum": ["ok", "down", "disabled"]},
                        "storage": {"enum": ["ok", "down", "disabled"]},
                        "relay": {"enum": ["ok", "down", "disabled"]},
                        "process": {"enum": ["starting", "serving", "draining"]},
                    }
                ),
            }
        ),
    }
    seen_story = _object(
        {
            **schemas["Story"]["properties"],
            "seen": {"type": "boolean", "description": "you have recorded a view of it (never your own stories)"},
        }
    )
    schemas["SeenStory"] = seen_story
    schemas["TrayAuthor"] = _object(
        {
            "author": _ref("Author"),
            "stories": {"type": "array", "items": _ref("SeenStory"), "description": "oldest first, at most 100"},
            "has_unseen": {"type": "boolean"},
            "latest_at": _TIME,
        }
    )
    schemas["Tray"] = _page("authors", _ref("TrayAuthor"))
    schemas["AuthorStories"] = _object({"stories": {"type": "array", "items": _ref("SeenStory")}})

    email = {
        "type": "string",
        "maxLength": 254,
        # API.md: one @, a dot in the domain; trimmed and lower-cased by the server.
        "pattern": r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$",
        "examples": ["ada@example.com"],
    }
    password = {"type": "string", "minLength": 8, "maxLength": 128, "examples": ["correct horse battery"]}
    credentials = {"email": email, "password": password}
    login = {"type": "object", "required": list(credentials), "properties": credentials}
    signup = {**login, "properties": {**credentials, "display_name": _DISPLAY_NAME}}
    new_story = {
        "type": "object",
        "required": ["visibility"],
        "anyOf": [{"required": ["text"]}, {"required": ["media_key"]}],
        "properties": {
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TEXT_LENGTH,
                "pattern": r"\S",
                "description": f"1 to {MAX_TEXT_LENGTH} characters after trimming",
            },
            "media_key": {
                "type": "string",
                "maxLength": MAX_MEDIA_KEY_LENGTH,
                "description": "a media_key from POST /upload/presigned (yours, issued in the last 24 h, not used "
                "by another story), its file uploaded: 400 media_not_uploaded when the store answers and has no "
                "object under it",
            },
            "visibility": _VISIBILITY,
            "audience_user_ids": {
                "type": "array",
                "items": {"type": "string", "format": "uuid"},
                "maxItems": MAX_AUDIENCE,
                "description": f"only with visibility friends: at most {MAX_AUDIENCE} distinct existing users, "
                "who must also follow you to see the story; empty: no list",
            },
        },
    }
    upload_request = {
        "type": "object",
        "required": ["content_type", "size"],
        "properties": {
            "content_type": {"enum": list(CONTENT_TYPES)},
            "size": {"type": "integer", "minimum": 1, "maximum": settings.max_upload_bytes, "description": "bytes"},
            "file_name": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": MAX_FILE_NAME_LENGTH,
                "description": "optional, only checked (no path separators, control characters or surrounding "
                "spaces); the key never uses it",
            },
        },
    }
    bad_request = _responses("BadRequest")
    # Every route that needs a token: its session may be revoked, its user suspended.
    unauthorized = _responses("Unauthorized", "Suspended")
    not_found = _responses("NotFound")
    unavailable = _responses("Unavailable")
    story_links = _links(
        "id",
        {
            "getStory": "id",
            "viewStory": "id",
            "reactToStory": "id",
            "listViewers": "id",
            "deleteStory": "id",
        },
    )
    user_links = _links(
        "user_id",
        {
            "getUser": "id",
            "listFollowers": "id",
            "listFollowing": "id",
            "follow": "user_id",
            "block": "user_id",
            "mute": "user_id",
        },
    )
    stories_limit = settings.rate_limit_stories_per_minute
    reactions_limit = settings.rate_limit_reactions_per_minute
    uploads_limit = settings.rate_limit_uploads_per_minute

    paths: dict[str, Any] = {
        "/signup": {
            "post": _operation(
                "signup",
                "auth",
                "Create an account",
                {
                    "201": _json(
                        _ref("Session"), "created: a session for the new user", SESSION_EXAMPLE, links=user_links
                    ),
                    **_responses("BadRequest"),
                    "409": _error(
                        "email_taken: an account with this email (after trimming and lower-casing) exists",
                        ("email_taken",),
                        _error_example("email_taken", "an account with this email already exists"),
                    ),
                    **_responses("PayloadTooLarge", "UnsupportedMediaType", "Unavailable"),
                },
                description="Opens a session. Email is trimmed and lower-cased. Passwords: bcrypt; when "
                "more sign-ups and logins wait for hashing than the process finishes in about 5 s, 503 overloaded.",
                body=signup,
                body_example={"email": "ada@example.com", "password": "correct horse battery", "display_name": "Ada"},
                public=True,
            )
        },
        "/login": {
            "post": _operation(
                "login",
                "auth",
                "Log in",
                {
                    "200": _json(_ref("Session"), "logged in", SESSION_EXAMPLE),
                    **bad_request,
                    "401": _error(
                        "invalid_credentials: unknown email or wrong password (the same answer, in comparable time)",
                        ("invalid_credentials",),
                        _error_example("invalid_credentials", "email or password is incorrect"),
                    ),
                    **_responses("Suspended"),
                    **_responses("PayloadTooLarge", "UnsupportedMediaType", "RateLimited", "Unavailable"),
                },
                description="Opens a session. After 10 failed logins for an email within 15 minutes, 429 "
                "rate_limited for that email (existing or not) until Retry-After. A suspended account with the right "
                "password: 403 account_suspended.",
                body=login,
                body_example={"email": "ada@example.com", "password": "correct horse battery"},
                public=True,
            )
        },
        "/token/refresh": {
            "post": _operation(
                "refreshToken",
                "auth",
                "Trade a refresh token for a new token and a new refresh token (rotation)",
                {
                    "200": _json(_ref("Session"), "refreshed: the old refresh token is used up", SESSION_EXAMPLE),
                    **bad_request,
                    "401": _error(
                        "invalid_refresh_token: unknown or expired; session_revoked: the token was used already "
                        "(its whole session is revoked now), or its session was revoked",
                        ("invalid_refresh_token", "session_revoked"),
                        _error_example("session_revoked", "this session was revoked; log in again"),
                    ),
                    **_responses("Suspended", "PayloadTooLarge", "UnsupportedMediaType", "Unavailable"),
                },
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
            )
        },
        "/logout": {
            "post": _operation(
                "logout",
                "auth",
                "Sign out: revoke this token's session",
                {"204": {"description": "signed out"}, **unauthorized, **unavailable},
                description="The session's tokens and refresh token answer 401 session_revoked on every process "
                "within 1 s; its open WebSockets close with 1008.",
            )
        },
        "/me/sessions": {
            "get": _operation(
                "listSessions",
                "auth",
                "Your active sessions, most recently used first",
                {
                    "200": _json(
                        _ref("SessionList"),
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
                    ),
                    **unauthorized,
                    **unavailable,
                },
                description="Active: not revoked, and refreshed (or opened) within REFRESH_TOKEN_DAYS.",
            )
        },
        "/me/sessions/{session_id}": {
            "delete": _operation(
                "revokeSession",
                "auth",
                "Revoke one of your sessions (idempotent)",
                {"204": {"description": "revoked"}, **unauthorized, **not_found, **unavailable},
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
            )
        },
        "/me/password": {
            "post": _operation(
                "changePassword",
                "auth",
                "Change your password; every other session is revoked",
                {
                    "204": {"description": "changed"},
                    **bad_request,
                    **_responses("Unauthorized"),
                    "403": _error(
                        "wrong_password: the current password is wrong; account_suspended",
                        ("wrong_password", "account_suspended"),
                        _error_example("wrong_password", "the password is wrong"),
                    ),
                    **_responses("PayloadTooLarge", "UnsupportedMediaType", "RateLimited", "Unavailable"),
                },
                description="Wrong current passwords count against the account's email in the login throttle "
                "(10 per 15 minutes, then 429). The session of this request stays signed in.",
                body={
                    "type": "object",
                    "required": ["current_password", "new_password"],
                    "properties": {"current_password": {"type": "string"}, "new_password": password},
                },
                body_example={"current_password": "correct horse battery", "new_password": "battery staple horse"},
            )
        },
        "/me": {
            "get": _operation(
                "getMe",
                "profiles",
                "Your profile (the only place your email appears)",
                {
                    "200": _json(
                        _ref("Me"),
                        "you",
                        {
                            "user_id": ALICE,
                            "email": "ada@example.com",
                            "display_name": "Ada",
                            "created_at": AT,
                            "followers": 12,
                            "following": 3,
                        },
                    ),
                    **unauthorized,
                    **unavailable,
                },
            ),
            "patch": _operation(
                "updateMe",
                "profiles",
                "Change your display name",
                {
                    "200": _json(_ref("Me"), "you, changed"),
                    **bad_request,
                    **unauthorized,
                    **_responses("PayloadTooLarge", "UnsupportedMediaType", "Unavailable"),
                },
                description="Only display_name can be changed: any other field is a 400. An empty object changes "
                "nothing.",
                body={"type": "object", "properties": {"display_name": _DISPLAY_NAME}, "additionalProperties": False},
                body_example={"display_name": "Ada L."},
            ),
            "delete": _operation(
                "deleteMe",
                "account",
                "Delete your account and everything of it",
                {
                    "204": {"description": "erased: the account's tokens answer 401, its email can sign up again"},
                    **bad_request,
                    **unauthorized,
                    "403": _error(
                        "wrong_password: the password is wrong",
                        ("wrong_password",),
                        _error_example("wrong_password", "the password is wrong"),
                    ),
                    **_responses("PayloadTooLarge", "UnsupportedMediaType", "RateLimited", "Unavailable"),
                },
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
            ),
        },
        "/me/export": {
            "get": _operation(
                "exportMe",
                "account",
                "Everything the service stores about you, as one JSON document",
                {
                    "200": _json(
                        _ref("Export"),
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
                    ),
                    **unauthorized,
                    **_responses("RateLimited", "Unavailable"),
                },
                description="Your profile, your sessions, your stories (expired and deleted ones still kept, with "
                "their audience), your views and reactions, follows both ways, blocks, mutes, the reports you "
                "filed and upload records; no token or password material. Limited to 1 per 10 minutes "
                "(429 rate_limited with Retry-After). The body is streamed: a response cut short (the database "
                "lost half way) is not valid JSON.",
            )
        },
        "/users/{id}": {
            "get": _operation(
                "getUser",
                "profiles",
                "A user's public profile",
                {
                    "200": _json(
                        _ref("Profile"),
                        "the profile",
                        {
                            "user_id": BOB,
                            "display_name": "Bob",
                            "created_at": AT,
                            "followers": 4,
                            "following": 7,
                            "followed_by_me": True,
                            "follows_me": False,
                        },
                    ),
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="404 when the user is unknown or has blocked you.",
                parameters=_path_id("id", "user"),
            )
        },
        "/users/{id}/followers": {
            "get": _operation(
                "listFollowers",
                "social",
                "Who follows a user, most recent follow first",
                {
                    "200": _json(_ref("FollowList"), "a page", USERS_EXAMPLE),
                    **bad_request,
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="Users in a block with you are left out; 404 when the user is unknown or has blocked you.",
                parameters=_path_id("id", "user") + _paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/users/{id}/following": {
            "get": _operation(
                "listFollowing",
                "social",
                "Whom a user follows, most recent follow first",
                {
                    "200": _json(_ref("FollowList"), "a page", USERS_EXAMPLE),
                    **bad_request,
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="Users in a block with you are left out; 404 when the user is unknown or has blocked you.",
                parameters=_path_id("id", "user") + _paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/stories": {
            "post": _operation(
                "createStory",
                "stories",
                "Create a story",
                {
                    "201": _json(
                        _ref("Story"),
                        "created (or, for a retry with the same Idempotency-Key and body, the original story)",
                        STORY_EXAMPLE,
                        headers={
                            "Idempotent-Replay": {
                                "description": "true when this answers a retry and nothing was created",
                                "schema": {"const": "true"},
                            }
                        },
                        links=story_links,
                    ),
                    "400": _error(
                        "invalid_request: malformed JSON, wrong types or invalid values; media_not_uploaded: the "
                        "store has no object under media_key",
                        ("invalid_request", "media_not_uploaded"),
                        _error_example(
                            "invalid_request",
                            "visibility: must be one of public, friends, private",
                            visibility="invalid",
                        ),
                    ),
                    **unauthorized,
                    **_responses("PayloadTooLarge", "UnsupportedMediaType"),
                    "422": _error(
                        "idempotency_key_reused: this Idempotency-Key came with another body",
                        ("idempotency_key_reused",),
                        _error_example(
                            "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
                        ),
                    ),
                    **_responses("RateLimited", "Unavailable"),
                },
                description=f"At least one of text and media_key. Expires STORY_TTL_SECONDS after creation. "
                f"Rate limit: {stories_limit} per minute per user (429). With an Idempotency-Key, a retry with the "
                "same key and body within 24 h answers the original 201 and creates nothing: retry a 503 that way.",
                body=new_story,
                body_example={"text": "Hello from the lake", "visibility": "public"},
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "1 to 255 visible ASCII characters, honoured per user for 24 h",
                        "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                        "example": "b7f3c0de-retry-1",
                    }
                ],
            )
        },
        "/stories/{id}": {
            "get": _operation(
                "getStory",
                "stories",
                "Read an active story you may see",
                {"200": _json(_ref("Story"), "the story", STORY_EXAMPLE), **unauthorized, **not_found, **unavailable},
                description="404 when it is unknown, expired, deleted or not visible to you.",
                parameters=_path_id("id", "story"),
            ),
            "delete": _operation(
                "deleteStory",
                "stories",
                "Delete your story",
                {
                    "204": {"description": "deleted (also when it already was, or has expired)"},
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="It disappears from every read at once; its media is removed by the expiry worker. "
                "404 for anyone but the author.",
                parameters=_path_id("id", "story"),
            ),
        },
        "/stories/{id}/viewers": {
            "get": _operation(
                "listViewers",
                "stories",
                "Seen by: who viewed your story, most recent view first",
                {
                    "200": _json(
                        _ref("Viewers"),
                        "a page",
                        {
                            "viewers": [{"user_id": BOB, "display_name": "Bob", "viewed_at": AT, "reactions": ["🔥"]}],
                            "next_cursor": None,
                        },
                    ),
                    **bad_request,
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="For the author only, for stories created in the last 7 days (active, expired or "
                "deleted); users the author blocked are left out.",
                parameters=_path_id("id", "story") + _paging(DEFAULT_VIEWERS_LIMIT),
            )
        },
        "/stories/{id}/view": {
            "post": _operation(
                "viewStory",
                "stories",
                "Record a view",
                {
                    "200": _json(
                        _ref("View"),
                        "the view (first_view false for a repeat, and for the author's own view, not recorded)",
                        {"story_id": STORY, "viewer_id": BOB, "viewed_at": AT, "first_view": True},
                    ),
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="Idempotent: one view per story and viewer. The first sends story.viewed to the author.",
                parameters=_path_id("id", "story"),
            )
        },
        "/stories/{id}/reactions": {
            "post": _operation(
                "reactToStory",
                "stories",
                "React with an emoji",
                {
                    "201": _json(
                        _ref("Reaction"),
                        "the reaction (or, for a retry with the same Idempotency-Key and body, the original one)",
                        {"id": ALICE, "story_id": STORY, "user_id": BOB, "emoji": "🔥", "created_at": AT},
                        headers={
                            "Idempotent-Replay": {
                                "description": "true when this answers a retry and nothing was added",
                                "schema": {"const": "true"},
                            }
                        },
                    ),
                    **bad_request,
                    **unauthorized,
                    **not_found,
                    **_responses("PayloadTooLarge", "UnsupportedMediaType"),
                    "422": _error(
                        "idempotency_key_reused: this Idempotency-Key came with another body or story",
                        ("idempotency_key_reused",),
                        _error_example(
                            "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
                        ),
                    ),
                    **_responses("RateLimited", "Unavailable"),
                },
                description=f"One of {' '.join(REACTION_EMOJIS)} (❤ without the variation selector is taken as ❤️). "
                f"A user may react more than once. Sends story.reacted to the author. Rate limit: {reactions_limit} "
                "per minute per user (429). With an Idempotency-Key, a retry with the same key, story and body "
                "within 24 h answers the original 201 and adds nothing: a retried reaction is never counted twice.",
                body={
                    "type": "object",
                    "required": ["emoji"],
                    "properties": {"emoji": {"enum": [*REACTION_EMOJIS, "❤"]}},
                },
                body_example={"emoji": "🔥"},
                parameters=[
                    *_path_id("id", "story"),
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "1 to 255 visible ASCII characters, honoured per user for 24 h",
                        "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                        "example": "b7f3c0de-retry-1",
                    },
                ],
            )
        },
        "/feed": {
            "get": _operation(
                "getFeed",
                "stories",
                "Active stories you may see, newest first",
                {
                    "200": _json(_ref("Feed"), "a page", {"stories": [STORY_EXAMPLE], "next_cursor": CURSOR}),
                    **bad_request,
                    **unauthorized,
                    **unavailable,
                },
                description="Your own, friends stories of the people you follow, and public ones; blocked users' "
                "(either way) and muted users' left out. Keyset pages: walking them returns every story once. "
                "Other users' new stories and the counters may lag by FEED_CACHE_SECONDS.",
                parameters=_paging(DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT),
            )
        },
        "/tray": {
            "get": _operation(
                "getTray",
                "stories",
                "Your feed's stories grouped by author: your own, then unseen, then seen",
                {
                    "200": _json(_ref("Tray"), "a page of authors", TRAY_EXAMPLE),
                    **bad_request,
                    **unauthorized,
                    **unavailable,
                },
                description="Exactly the active stories of your feed, grouped by author (oldest first, at most the "
                "author's 100 newest), each with `seen`. Your own group first, then authors with an unseen story, "
                "then the rest, each part by latest_at descending, then author id. `limit` counts authors. The "
                "cursor keeps the walk's start: views during a walk move no author between the parts. Your own "
                "views apply at once; the rest may lag by FEED_CACHE_SECONDS, as the feed.",
                parameters=_paging(DEFAULT_TRAY_LIMIT, MAX_TRAY_LIMIT),
            )
        },
        "/users/{id}/stories": {
            "get": _operation(
                "getAuthorStories",
                "stories",
                "A user's active stories you may see, oldest first (at most 100), with `seen`",
                {
                    "200": _json(_ref("AuthorStories"), "the stories", {"stories": [{**STORY_EXAMPLE, "seen": True}]}),
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="404 when the user is unknown or in a block with you (either way). Muting hides a user "
                "from your feed and tray, not from this list.",
                parameters=_path_id("id", "user"),
            )
        },
        "/follow/{user_id}": {
            "post": _operation(
                "follow",
                "social",
                "Follow a user (idempotent)",
                {
                    "200": _json(
                        _ref("Follow"), "following", {"follower_id": ALICE, "followee_id": BOB, "created_at": AT}
                    ),
                    **bad_request,
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="400 for yourself; 404 for an unknown user or one in a block with you.",
                parameters=_path_id("user_id", "user"),
            ),
            "delete": _operation(
                "unfollow",
                "social",
                "Unfollow a user (idempotent)",
                {"204": {"description": "not following"}, **unauthorized, **not_found, **unavailable},
                parameters=_path_id("user_id", "user"),
            ),
        },
        "/blocks/{user_id}": {
            "post": _operation(
                "block",
                "social",
                "Block a user (idempotent)",
                {
                    "200": _json(_ref("Block"), "blocked", {"blocker_id": ALICE, "blocked_id": BOB, "created_at": AT}),
                    **bad_request,
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="Removes the follows between you both ways; neither sees the other's stories nor can "
                "follow the other. 400 for yourself; 404 for an unknown user.",
                parameters=_path_id("user_id", "user"),
            ),
            "delete": _operation(
                "unblock",
                "social",
                "Unblock (idempotent; removed follows are not restored)",
                {"204": {"description": "not blocked"}, **unauthorized, **not_found, **unavailable},
                parameters=_path_id("user_id", "user"),
            ),
        },
        "/me/blocks": {
            "get": _operation(
                "listBlocks",
                "social",
                "Users you blocked, most recent first",
                {
                    "200": _json(
                        _ref("BlockList"),
                        "a page",
                        {"users": [{"user_id": BOB, "display_name": "Bob", "blocked_at": AT}], "next_cursor": None},
                    ),
                    **bad_request,
                    **unauthorized,
                    **unavailable,
                },
                parameters=_paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/mutes/{user_id}": {
            "post": _operation(
                "mute",
                "social",
                "Mute a user (idempotent): their stories leave your feed only",
                {
                    "200": _json(_ref("Mute"), "muted", {"muter_id": ALICE, "muted_id": BOB, "created_at": AT}),
                    **bad_request,
                    **unauthorized,
                    **not_found,
                    **unavailable,
                },
                description="400 for yourself; 404 for an unknown user.",
                parameters=_path_id("user_id", "user"),
            ),
            "delete": _operation(
                "unmute",
                "social",
                "Unmute (idempotent)",
                {"204": {"description": "not muted"}, **unauthorized, **not_found, **unavailable},
                parameters=_path_id("user_id", "user"),
            ),
        },
        "/me/mutes": {
            "get": _operation(
                "listMutes",
                "social",
                "Users you muted, most recent first",
                {
                    "200": _json(
                        _ref("MuteList"),
                        "a page",
                        {"users": [{"user_id": BOB, "display_name": "Bob", "muted_at": AT}], "next_cursor": None},
                    ),
                    **bad_request,
                    **unauthorized,
                    **unavailable,
                },
                parameters=_paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/me/stats": {
            "get": _operation(
                "getStats",
                "stats",
                "Your stories of the last 7 days",
                {
                    "200": _json(
                        _ref("Stats"),
                        "posted, views, unique viewers and reactions per emoji",
                        {"posted": 4, "views": 31, "unique_viewers": 17, "reactions": {"🔥": 5, "❤️": 2}},
                    ),
                    **unauthorized,
                    **unavailable,
                },
            )
        },
        "/me/events": {
            "get": _operation(
                "listEvents",
                "realtime",
                "Your realtime events over HTTP, oldest first (catch-up)",
                {
                    "200": _json(_ref("Events"), "a page", {"events": [EVENT_EXAMPLE], "next_cursor": None}),
                    **bad_request,
                    **unauthorized,
                    **unavailable,
                },
                description="The same messages as /ws, read from the recorded views and reactions of the last 7 "
                "days. `after`: the last id you have seen; when the log no longer holds it, the page starts with "
                '{"type": "resync"}: refetch what you show. `next_cursor` is set when more events follow at once.',
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "description": f"page size, 1 to {MAX_EVENTS_LIMIT} (400 outside)",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_LIMIT, "default": 50},
                    },
                    _AFTER_PARAM,
                ],
            )
        },
        "/upload/presigned": {
            "post": _operation(
                "presignUpload",
                "media",
                "A presigned PUT URL for one upload",
                {
                    "200": _json(
                        _ref("Upload"),
                        "PUT the file to upload_url with these headers and Content-Length = size",
                        {
                            "upload_url": "http://127.0.0.1:8333/stories-media/uploads/...&X-Amz-Signature=...",
                            "method": "PUT",
                            "headers": {"Content-Type": "image/jpeg"},
                            "media_key": f"uploads/{ALICE}/4f9c2a7d1e8b4c3a9d6e5f0a1b2c3d4e.jpg",
                            "expires_in": UPLOAD_URL_SECONDS,
                        },
                        headers={
                            "Idempotent-Replay": {
                                "description": "true when this answers a retry: the same media_key, a fresh URL",
                                "schema": {"const": "true"},
                            }
                        },
                    ),
                    **bad_request,
                    **unauthorized,
                    **_responses("PayloadTooLarge", "UnsupportedMediaType"),
                    "409": _error(
                        "upload_used: a retry (same Idempotency-Key) of a presign whose key a story uses already",
                        ("upload_used",),
                        _error_example(
                            "upload_used",
                            "this upload's key is used by a story (or was deleted); ask for a new upload with a new "
                            "Idempotency-Key",
                        ),
                    ),
                    "422": _error(
                        "idempotency_key_reused: this Idempotency-Key came with another body",
                        ("idempotency_key_reused",),
                        _error_example(
                            "idempotency_key_reused", "this Idempotency-Key was used with a different request body"
                        ),
                    ),
                    **_responses("RateLimited"),
                    "503": _error(
                        "storage_unavailable: object storage is off (MINIO_ENDPOINT=off) or unreachable; "
                        "database_unavailable, overloaded: as on every route",
                        ("storage_unavailable", "database_unavailable", "overloaded"),
                        _error_example(
                            "storage_unavailable", "object storage is not configured on this server: uploads are off"
                        ),
                        {
                            "Retry-After": {
                                **_RETRY_AFTER,
                                "description": "with overloaded: seconds to wait before retrying",
                            }
                        },
                    ),
                },
                description="The API never sees the file: the client PUTs it straight to the object store. The "
                "URL signs Content-Type and Content-Length, so the store refuses another type or size. Rate limit: "
                f"{uploads_limit} per minute per user (429). With an Idempotency-Key, a retry with the same key and "
                "body within 24 h answers the same media_key with a fresh upload URL and issues no new key.",
                body=upload_request,
                body_example={"content_type": "image/jpeg", "file_name": "lake.jpg", "size": 123456},
                parameters=[
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "description": "1 to 255 visible ASCII characters, honoured per user for 24 h",
                        "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
                        "example": "b7f3c0de-retry-1",
                    }
                ],
            )
        },
        "/ws": {
            "get": _operation(
                "events",
                "realtime",
                "WebSocket: realtime events for your stories",
                {
                    "101": {"description": "switching protocols: the server sends JSON text messages"},
                    **bad_request,
                    **unauthorized,
                    "426": _error(
                        "upgrade_required: a plain HTTP request, not a WebSocket upgrade",
                        ("upgrade_required",),
                        _error_example("upgrade_required", "/ws is a WebSocket: send an upgrade request"),
                        {"Upgrade": {"description": "websocket", "schema": {"const": "websocket"}}},
                    ),
                },
                description="Upgrade with `Authorization: Bearer <jwt>` or `?token=<jwt>` (browsers cannot set "
                'headers on a WebSocket). Messages: `{"type": "story.viewed", "id", "payload": {story_id, '
                'viewer_id, viewed_at}}` and `{"type": "story.reacted", "id", "payload": {story_id, user_id, '
                "emoji, created_at}}`, only to the story's author. With `?after=<last event id seen>`, first every "
                'event since (oldest first, at most 7 days and 1,000, else a {"type": "resync"} message), then the '
                "live stream, with no gap and no duplicate. Client messages are ignored and capped at 4 KiB (1009). "
                "Close codes: 1001 server shutting down; 1008 too slow to keep up, an 11th socket of one user (the "
                "oldest closes), or the token expired; 1012 events were missed: reconnect with after=.",
                parameters=[
                    {
                        "name": "token",
                        "in": "query",
                        "description": "the JWT, for clients that cannot send headers",
                        "schema": {"type": "string"},
                    },
                    _AFTER_PARAM,
                ],
            )
        },
        "/healthz": {
            "get": _operation(
                "healthz",
                "operations",
                "Health of the process and its dependencies (liveness)",
                {
                    "200": _json(
                        _ref("Health"),
                        "serving",
                        {"status": "ok", "checks": {"db": "ok", "redis": "ok", "storage": "ok"}},
                    ),
                    "503": _json(
                        _ref("Health"),
                        "the database is down (the process keeps running and recovers when it returns)",
                        {"status": "degraded", "checks": {"db": "down", "redis": "ok", "storage": "ok"}},
                    ),
                },
                public=True,
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "operations",
                "Readiness: 200 only while this process should get traffic",
                {
                    "200": _json(
                        _ref("Readiness"),
                        "ready",
                        {
                            "status": "ok",
                            "checks": {"db": "ok", "redis": "ok", "storage": "ok", "relay": "ok", "process": "serving"},
                        },
                    ),
                    "503": _json(
                        _ref("Readiness"),
                        "not ready: starting, draining, the database down or the event relay not subscribed",
                        {
                            "status": "ok",
                            "checks": {
                                "db": "ok",
                                "redis": "disabled",
                                "storage": "disabled",
                                "relay": "ok",
                                "process": "draining",
                            },
                        },
                    ),
                },
                public=True,
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "operations",
                "Prometheus metrics (docs/operations.md lists them)",
                {
                    "200": {
                        "description": "Prometheus text format 0.0.4",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                public=True,
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "operations",
                "This document (OpenAPI 3.1)",
                {"200": _json({"type": "object", "required": ["openapi", "paths"]}, "the document")},
                public=True,
            )
        },
        "/docs": {
            "get": _operation(
                "docs",
                "operations",
                "Browse this document (Swagger UI, served by this process: works offline)",
                {"200": {"description": "the page", "content": {"text/html": {"schema": {"type": "string"}}}}},
                public=True,
            )
        },
        "/docs/static/{file}": {
            "get": _operation(
                "docsFile",
                "operations",
                "A file of the Swagger UI that /docs loads",
                {
                    "200": {
                        "description": "the file",
                        "content": {
                            media: {"schema": {"type": "string", "format": "binary"}}
                            for media in sorted(set(SWAGGER_UI_FILES.values()))
                        },
                    },
                    "304": {"description": "not modified (If-None-Match)"},
                    **not_found,
                },
                public=True,
                parameters=[
                    {"name": "file", "in": "path", "required": True, "schema": {"enum": list(SWAGGER_UI_FILES)}}
                ],
            )
        },
    }
    schemas |= _moderation_schemas()
    paths |= _moderation_paths(bad_request | unauthorized | not_found | unavailable)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Stories",
            "version": __version__,
            "summary": "Ephemeral stories: HTTP and WebSocket API",
            "description": "JSON in, JSON out. Routes with a lock need `Authorization: Bearer <jwt>`: sign up or "
            'log in, then paste the token into Authorize. Every error has the body `{"error": "<code>", '
            '"message": "..."}` (validation errors add `fields`), and every response carries `X-Request-ID` '
            "(yours, when you send a sane one). Times are RFC 3339 UTC with milliseconds; ids are UUIDs. "
            "The contract in prose is docs/API.md.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {
                "name": "auth",
                "description": "sign up, log in and sessions: a bearer JWT per session, refresh tokens that rotate",
            },
            {"name": "profiles", "description": "display names and profiles"},
            {"name": "account", "description": "your account and your data: delete it, export it"},
            {"name": "stories", "description": "stories, the feed, views, reactions and who saw them"},
            {"name": "social", "description": "follows, blocks and mutes"},
            {"name": "stats", "description": "your figures"},
            {"name": "media", "description": "uploads, straight to the object store"},
            {"name": "realtime", "description": "the WebSocket"},
            {"name": "reports", "description": "report a story or a user"},
            {
                "name": "moderation",
                "description": "the reports queue, decisions, suspensions and the audit log: moderators only "
                "(`stories admin grant <email>`); everyone else gets 404",
            },
            {"name": "operations", "description": "probes, metrics and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": _error_responses(settings),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "the token of POST /signup or POST /login",
                }
            },
        },
        "security": [{"bearer": []}],
    }


# ---------------------------------------------------------------------------------------------------------------
# Reports and moderation

REPORT = "5d41402a-bc4b-4a76-9b19-9c9bd3f0c2a1"
REPORT_EXAMPLE = {"report_id": REPORT, "status": "open"}
_NOTE = {
    "type": ["string", "null"],
    "maxLength": MAX_NOTE_LENGTH,
    "description": f"at most {MAX_NOTE_LENGTH} characters",
}
REPORT_ENTRY_EXAMPLE = {
    "report_id": REPORT,
    "target_type": "story",
    "target_id": STORY,
    "reasons": {"spam": 3, "hate": 2},
    "reporters": 5,
    "first_reported_at": AT,
    "status": "resolved",
    "user_suspended": False,
    "resolution": {"action": "remove_story", "note": "scam link", "resolved_at": AT, "moderator_id": BOB},
    "story": {**STORY_EXAMPLE, "media_url": None},
}
AUDIT_EXAMPLE = {
    "actor_id": BOB,
    "action": "remove_story",
    "target_type": "story",
    "target_id": STORY,
    "note": "scam link",
    "at": AT,
}


def _moderation_schemas() -> dict[str, Any]:
    target_type = {"enum": ["story", "user"]}
    return {
        "Report": _object({"report_id": _UUID, "status": {"enum": list(STATUSES)}}),
        "ReportEntry": _object(
            {
                "report_id": {**_UUID, "description": "names the entry (its first report); resolve takes it"},
                "target_type": target_type,
                "target_id": _UUID,
                "reasons": {
                    "type": "object",
                    "propertyNames": {"enum": list(REPORT_REASONS)},
                    "additionalProperties": {"type": "integer", "minimum": 1},
                    "description": "reports per reason",
                },
                "reporters": {"type": "integer", "minimum": 1},
                "first_reported_at": _TIME,
                "status": {"enum": list(STATUSES)},
                "user_suspended": {
                    "type": "boolean",
                    "description": "whether the reported user (or the story's author) is suspended now",
                },
                "resolution": {
                    "oneOf": [
                        {"type": "null"},
                        _object(
                            {
                                "action": {"enum": list(ACTIONS)},
                                "note": {"type": ["string", "null"]},
                                "resolved_at": _TIME,
                                "moderator_id": {**_UUID, "type": ["string", "null"]},
                            }
                        ),
                    ]
                },
                "story": {**_ref("Story"), "description": "story reports: the story as its author sees it, any state"},
                "user": _object(
                    {"user_id": _UUID, "display_name": _DISPLAY_NAME, "created_at": _TIME, **_FOLLOW_COUNTS}
                ),
            },
            optional=("story", "user"),
        ),
        "ReportPage": _page("reports", _ref("ReportEntry")),
        "AuditEntry": _object(
            {
                "actor_id": {
                    **_UUID,
                    "type": ["string", "null"],
                    "description": "the moderator; null for an operator's grant or revoke, or a deleted account",
                },
                "action": {
                    "enum": [*ACTIONS, "unsuspend_user", "grant_moderator", "revoke_moderator"],
                },
                "target_type": target_type,
                "target_id": _UUID,
                "note": {"type": ["string", "null"]},
                "at": _TIME,
            }
        ),
        "AuditPage": _page("entries", _ref("AuditEntry")),
    }


def _moderation_paths(errors: dict[str, Any]) -> dict[str, Any]:
    """`errors`: the 400, 401, 404 and 503 references."""
    bad_body = _responses("BadRequest", "PayloadTooLarge", "UnsupportedMediaType")
    report_body = {
        "type": "object",
        "required": ["reason"],
        "properties": {"reason": {"enum": list(REPORT_REASONS)}, "note": _NOTE},
    }
    reused = {
        "422": _error(
            "idempotency_key_reused: this Idempotency-Key came with another body or target",
            ("idempotency_key_reused",),
            _error_example("idempotency_key_reused", "this Idempotency-Key was used with a different request body"),
        )
    }
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "1 to 255 visible ASCII characters, honoured per user for 24 h (as for POST /stories)",
        "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
        "example": "c1a0-report-1",
    }

    def report(operation_id: str, what: str) -> dict[str, Any]:
        return {
            "post": _operation(
                operation_id,
                "reports",
                f"Report {what}",
                {
                    "201": _json(
                        _ref("Report"),
                        "filed (or, for a retry with the same Idempotency-Key and body, the original report)",
                        REPORT_EXAMPLE,
                    ),
                    "200": _json(_ref("Report"), "you had reported it already: your existing report", REPORT_EXAMPLE),
                    **errors,
                    **bad_body,
                    **reused,
                },
                description=f"Only for {what} you may see (else 404); yourself or your own story: 400. One report "
                "per reporter and target. A reported story leaves your reads at once; REPORT_HIDE_THRESHOLD "
                "reporters hide it from everyone but its author until a moderator decides.",
                body=report_body,
                body_example={"reason": "spam", "note": "links to a scam"},
                parameters=[*_path_id("id", "story" if what == "a story" else "user"), idempotency_key],
            )
        }

    moderators_only = " Moderators only: 404 (as an unknown route) to everyone else."
    entry = _json(_ref("ReportEntry"), "the entry, resolved", REPORT_ENTRY_EXAMPLE)
    conflict = {
        "409": _error(
            "own_case: the report is about you or your story (another moderator must decide); already_resolved: "
            "it was decided otherwise before",
            ("own_case", "already_resolved"),
            _error_example("already_resolved", "this report was already resolved with dismiss"),
        )
    }
    unsuspend = _operation(
        "unsuspendUser",
        "moderation",
        "Lift a user's suspension",
        {
            "200": _json(
                _object({"user_id": _UUID, "suspended": {"const": False}}),
                "not suspended (any more); idempotent",
                {"user_id": BOB, "suspended": False},
            ),
            **errors,
            **bad_body,
            "409": _error(
                "own_case: your own account",
                ("own_case",),
                _error_example("own_case", "another moderator must decide about your own account"),
            ),
        },
        description="Audited (with the optional note) when it changes anything." + moderators_only,
        body={"type": "object", "properties": {"note": _NOTE}},
        body_example={"note": "appeal accepted"},
        parameters=_path_id("id", "user"),
    )
    unsuspend["requestBody"]["required"] = False
    return {
        "/stories/{id}/report": report("reportStory", "a story"),
        "/users/{id}/report": report("reportUser", "a user"),
        "/admin/reports": {
            "get": _operation(
                "listReports",
                "moderation",
                "The reports queue, one entry per reported target",
                {
                    "200": _json(
                        _ref("ReportPage"), "a page", {"reports": [REPORT_ENTRY_EXAMPLE], "next_cursor": None}
                    ),
                    **errors,
                },
                description="open: oldest first (the queue); resolved: latest decision first." + moderators_only,
                parameters=[
                    {
                        "name": "status",
                        "in": "query",
                        "description": "open (default) or resolved (400 else)",
                        "schema": {"enum": list(STATUSES), "default": "open"},
                    },
                    *_paging(DEFAULT_REPORTS_LIMIT),
                ],
            )
        },
        "/admin/reports/{id}/resolve": {
            "post": _operation(
                "resolveReport",
                "moderation",
                "Decide a reported target",
                {"200": entry, **errors, **bad_body, **conflict},
                description="dismiss: a held story is visible again; remove_story: deleted for everyone as by its "
                "author (400 for a user report); suspend_user: the user (or the story's author) is suspended, "
                "their stories leave every read. One transaction with its audit entry; the same decision again "
                "answers the entry unchanged. The id is the entry's report_id or any report's id in it."
                + moderators_only,
                body={
                    "type": "object",
                    "required": ["action"],
                    "properties": {"action": {"enum": list(ACTIONS)}, "note": _NOTE},
                },
                body_example={"action": "remove_story", "note": "scam link"},
                parameters=_path_id("id", "report"),
            )
        },
        "/admin/users/{id}/unsuspend": {"post": unsuspend},
        "/admin/audit": {
            "get": _operation(
                "listAudit",
                "moderation",
                "Every moderator action, newest first",
                {
                    "200": _json(_ref("AuditPage"), "a page", {"entries": [AUDIT_EXAMPLE], "next_cursor": None}),
                    **errors,
                },
                description="Kept forever: retention never deletes it." + moderators_only,
                parameters=_paging(DEFAULT_AUDIT_LIMIT),
            )
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Routes

# Swagger UI's own page, pointed at this process's files and document. No asset comes from elsewhere:
# validatorUrl null keeps it from sending the document to the public validator.
_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Stories API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/static/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="/docs/static/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js" charset="utf-8"></script>
<script>
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  displayRequestDuration: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
</script>
</body>
</html>
"""


@blueprint.get("/openapi.json")
async def openapi() -> Response:
    return json_response(openapi_document(deps().settings))


@blueprint.get("/docs")
async def docs() -> Response:
    return Response(_DOCS_PAGE, 200, content_type="text/html; charset=utf-8")


@functools.cache
def _swagger_ui_file(name: str) -> tuple[bytes, str]:
    """The file's bytes and their ETag, read once per process: 2 MB in all, which never change while it runs.
    (Served from memory: Quart's file bodies cost two thread hops per 8 KiB chunk.)"""
    data = (_swagger_ui_dist() / name).read_bytes()
    return data, hashlib.sha256(data).hexdigest()[:32]


@blueprint.get("/docs/static/<file>")
async def docs_file(file: str) -> Response:
    content_type = SWAGGER_UI_FILES.get(file)
    if content_type is None:
        raise NotFound("no such file of the API browser")
    data, etag = _swagger_ui_file(file)
    unchanged = request.if_none_match.contains(etag)
    response = Response(b"" if unchanged else data, 304 if unchanged else 200, content_type=content_type)
    response.set_etag(etag)
    response.cache_control.public = True
    response.cache_control.max_age = SWAGGER_UI_CACHE_SECONDS
    return response
