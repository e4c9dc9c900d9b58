"""GET /openapi.json (OpenAPI 3.1 of the routes this build serves) and GET /docs (an offline page for it)."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from stories import __version__
from stories.api.bodies import json_response
from stories.api.events import MAX_EVENTS_LIMIT
from stories.api.media import CONTENT_TYPES, MAX_FILE_NAME_LENGTH
from stories.api.paging import MAX_LIMIT
from stories.api.profiles import DEFAULT_LIST_LIMIT
from stories.api.stories import (
    DEFAULT_FEED_LIMIT,
    DEFAULT_VIEWERS_LIMIT,
    MAX_AUDIENCE,
    MAX_FEED_LIMIT,
    MAX_TEXT_LENGTH,
    REACTION_EMOJIS,
)
from stories.api.validate import MAX_DISPLAY_NAME_LENGTH

__all__ = ["blueprint", "openapi_document"]

blueprint = Blueprint("docs", __name__)

_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time", "examples": ["2026-11-24T10:00:00.123Z"]}
_AFTER_PARAM = {
    "name": "after",
    "in": "query",
    "description": "the id of the last event you have seen",
    "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    meaning = {
        400: "invalid request (malformed JSON, wrong types, invalid values)",
        401: "missing, malformed, expired or badly signed token",
        404: "unknown, or not visible to the caller",
        409: "conflict",
        413: "body larger than 64 KiB",
        415: "body is not JSON",
        422: "Idempotency-Key reused with a different body",
        429: "rate limited (see Retry-After)",
        503: "a dependency (the database; object storage for uploads) is unavailable",
    }
    return {str(s): _json(_ref("Error"), meaning[s]) for s in statuses}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    public: bool = False,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if public:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    return operation


_ID_PARAM = [{"name": "id", "in": "path", "required": True, "schema": _UUID}]
_USER_PARAM = [{"name": "user_id", "in": "path", "required": True, "schema": _UUID}]
_DISPLAY_NAME = {
    "type": ["string", "null"],
    "minLength": 1,
    "maxLength": MAX_DISPLAY_NAME_LENGTH,
    "description": "trimmed; no control characters; null: none",
}


def _paging(default: int, maximum: int = MAX_LIMIT) -> list[dict[str, Any]]:
    return [
        {
            "name": "limit",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
        },
        {
            "name": "cursor",
            "in": "query",
            "schema": {"type": "string"},
            "description": "next_cursor of the page before",
        },
    ]


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": list(properties), "properties": properties}


def _user_list(at_field: str) -> dict[str, Any]:
    entry = _object({"user_id": _UUID, "display_name": _DISPLAY_NAME, at_field: _TIME})
    return _object({"users": {"type": "array", "items": entry}, "next_cursor": {"type": ["string", "null"]}})


def openapi_document() -> dict[str, Any]:
    credential_fields: dict[str, Any] = {
        "email": {"type": "string", "maxLength": 254},
        "password": {"type": "string", "minLength": 8, "maxLength": 128},
    }
    credentials = {"type": "object", "required": ["email", "password"], "properties": credential_fields}
    signup = {**credentials, "properties": {**credential_fields, "display_name": _DISPLAY_NAME}}
    counts = {"followers": {"type": "integer"}, "following": {"type": "integer"}}
    new_story = {
        "type": "object",
        "required": ["visibility"],
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH},
            "media_key": {
                "type": "string",
                "description": "a key from POST /upload/presigned (yours, issued in the last 24 h, unused), its "
                "file uploaded; 400 media_not_uploaded when the store has no object under it",
            },
            "visibility": {"enum": ["public", "friends", "private"]},
            "audience_user_ids": {"type": "array", "items": _UUID, "maxItems": MAX_AUDIENCE},
        },
    }
    schemas = {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {
                "error": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "Session": {
            "type": "object",
            "properties": {"token": {"type": "string"}, "user_id": _UUID, "email": {"type": "string"}},
        },
        "Story": {
            "type": "object",
            "properties": {
                "id": _UUID,
                "author_id": _UUID,
                "author": _object({"user_id": _UUID, "display_name": _DISPLAY_NAME}),
                "text": {"type": ["string", "null"]},
                "media_key": {"type": ["string", "null"]},
                "media_url": {"type": ["string", "null"]},
                "visibility": {"enum": ["public", "friends", "private"]},
                "created_at": _TIME,
                "expires_at": _TIME,
                "view_count": {"type": "integer"},
                "reaction_count": {"type": "integer"},
            },
        },
        "Feed": {
            "type": "object",
            "properties": {
                "stories": {"type": "array", "items": _ref("Story")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "Event": {
            "type": "object",
            "required": ["type"],
            "properties": {
                "type": {"enum": ["story.viewed", "story.reacted", "resync"]},
                "id": {"type": "string", "description": "opaque; orders your events (absent on resync)"},
                "payload": {"type": "object"},
            },
        },
        "Events": {
            "type": "object",
            "properties": {
                "events": {"type": "array", "items": _ref("Event")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "View": {
            "type": "object",
            "properties": {
                "story_id": _UUID,
                "viewer_id": _UUID,
                "viewed_at": _TIME,
                "first_view": {"type": "boolean"},
            },
        },
        "Reaction": {
            "type": "object",
            "properties": {
                "id": _UUID,
                "story_id": _UUID,
                "user_id": _UUID,
                "emoji": {"enum": list(REACTION_EMOJIS)},
                "created_at": _TIME,
            },
        },
        "Upload": {
            "type": "object",
            "properties": {
                "upload_url": {"type": "string", "description": "PUT the file here, exactly once"},
                "method": {"const": "PUT"},
                "headers": {
                    "type": "object",
                    "description": "send these; Content-Length must equal size",
                    "properties": {"Content-Type": {"enum": list(CONTENT_TYPES)}},
                },
                "media_key": {"type": "string", "examples": ["uploads/<your user id>/<random>.jpg"]},
                "expires_in": {"type": "integer", "description": "seconds the upload_url stays valid"},
            },
        },
        "Follow": {
            "type": "object",
            "properties": {"follower_id": _UUID, "followee_id": _UUID, "created_at": _TIME},
        },
        "Stats": {
            "type": "object",
            "properties": {
                "posted": {"type": "integer"},
                "views": {"type": "integer"},
                "unique_viewers": {"type": "integer"},
                "reactions": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "Me": _object(
            {
                "user_id": _UUID,
                "email": {"type": "string"},
                "display_name": _DISPLAY_NAME,
                "created_at": _TIME,
                **counts,
            }
        ),
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
        "Block": _object({"blocker_id": _UUID, "blocked_id": _UUID, "created_at": _TIME}),
        "Mute": _object({"muter_id": _UUID, "muted_id": _UUID, "created_at": _TIME}),
        "Viewers": _object(
            {
                "viewers": {
                    "type": "array",
                    "items": _object(
                        {
                            "user_id": _UUID,
                            "display_name": _DISPLAY_NAME,
                            "viewed_at": _TIME,
                            "reactions": {
                                "type": "array",
                                "items": {"enum": list(REACTION_EMOJIS)},
                                "description": "this viewer's reactions to the story, oldest first",
                            },
                        }
                    ),
                },
                "next_cursor": {"type": ["string", "null"]},
            }
        ),
        "Health": {
            "type": "object",
            "properties": {
                "status": {"enum": ["ok", "degraded"]},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
    }
    paths = {
        "/signup": {
            "post": _operation(
                "Create an account (optionally with a display name)",
                {"201": _json(_ref("Session"), "created"), **_errors(400, 409, 413, 415)},
                body=signup,
                public=True,
            )
        },
        "/login": {
            "post": _operation(
                "Log in",
                {"200": _json(_ref("Session"), "logged in"), **_errors(400, 401, 413, 415)},
                body=credentials,
                public=True,
            )
        },
        "/stories": {
            "post": _operation(
                "Create a story (Idempotency-Key honoured for 24 h)",
                {"201": _json(_ref("Story"), "created"), **_errors(400, 401, 413, 415, 422, 429)},
                body=new_story,
                parameters=[
                    {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 255}}
                ],
            )
        },
        "/stories/{id}": {
            "get": _operation(
                "Read an active story you may see",
                {"200": _json(_ref("Story"), "the story"), **_errors(401, 404)},
                parameters=_ID_PARAM,
            ),
            "delete": _operation(
                "Delete your story (idempotent; it disappears from every read at once)",
                {"204": {"description": "deleted"}, **_errors(401, 404)},
                parameters=_ID_PARAM,
            ),
        },
        "/stories/{id}/viewers": {
            "get": _operation(
                "Seen by: who viewed your story (created in the last 7 days), most recent view first, with each "
                "viewer's reactions; users you blocked are left out",
                {"200": _json(_ref("Viewers"), "a page"), **_errors(400, 401, 404)},
                parameters=_ID_PARAM + _paging(DEFAULT_VIEWERS_LIMIT),
            )
        },
        "/feed": {
            "get": _operation(
                "Active stories you may see, newest first (blocked users' either way and muted users' left out)",
                {"200": _json(_ref("Feed"), "a page"), **_errors(400, 401)},
                parameters=_paging(DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT),
            )
        },
        "/stories/{id}/view": {
            "post": _operation(
                "Record a view (idempotent)",
                {"200": _json(_ref("View"), "the view"), **_errors(401, 404)},
                parameters=_ID_PARAM,
            )
        },
        "/stories/{id}/reactions": {
            "post": _operation(
                "React with an emoji",
                {"201": _json(_ref("Reaction"), "the reaction"), **_errors(400, 401, 404, 413, 415, 429)},
                body={
                    "type": "object",
                    "required": ["emoji"],
                    "properties": {"emoji": {"enum": list(REACTION_EMOJIS)}},
                },
                parameters=_ID_PARAM,
            )
        },
        "/upload/presigned": {
            "post": _operation(
                "A presigned PUT URL for one upload (the API never sees the file); 503 storage_unavailable when "
                "object storage is off or unreachable",
                {"200": _json(_ref("Upload"), "upload here"), **_errors(400, 401, 413, 415, 503)},
                body={
                    "type": "object",
                    "required": ["content_type", "size"],
                    "properties": {
                        "content_type": {"enum": list(CONTENT_TYPES)},
                        "size": {"type": "integer", "minimum": 1, "description": "bytes, at most MAX_UPLOAD_BYTES"},
                        "file_name": {"type": "string", "minLength": 1, "maxLength": MAX_FILE_NAME_LENGTH},
                    },
                },
            )
        },
        "/follow/{user_id}": {
            "post": _operation(
                "Follow a user (idempotent)",
                {"200": _json(_ref("Follow"), "following"), **_errors(400, 401, 404)},
                parameters=_USER_PARAM,
            ),
            "delete": _operation(
                "Unfollow a user (idempotent)",
                {"204": {"description": "not following"}, **_errors(401, 404)},
                parameters=_USER_PARAM,
            ),
        },
        "/me": {
            "get": _operation(
                "Your profile (the only place your email appears)", {"200": _json(_ref("Me"), "you"), **_errors(401)}
            ),
            "patch": _operation(
                "Change your display name",
                {"200": _json(_ref("Me"), "you, changed"), **_errors(400, 401, 413, 415)},
                body={"type": "object", "properties": {"display_name": _DISPLAY_NAME}, "additionalProperties": False},
            ),
        },
        "/users/{id}": {
            "get": _operation(
                "A user's public profile (404 when unknown or when they have blocked you)",
                {"200": _json(_ref("Profile"), "the profile"), **_errors(401, 404)},
                parameters=_ID_PARAM,
            )
        },
        "/users/{id}/followers": {
            "get": _operation(
                "Who follows a user, most recent follow first (users in a block with you are left out)",
                {"200": _json(_ref("FollowList"), "a page"), **_errors(400, 401, 404)},
                parameters=_ID_PARAM + _paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/users/{id}/following": {
            "get": _operation(
                "Whom a user follows, most recent follow first (users in a block with you are left out)",
                {"200": _json(_ref("FollowList"), "a page"), **_errors(400, 401, 404)},
                parameters=_ID_PARAM + _paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/blocks/{user_id}": {
            "post": _operation(
                "Block a user (idempotent): removes the follows between you both ways; neither sees the other's "
                "stories, nor can follow the other",
                {"200": _json(_ref("Block"), "blocked"), **_errors(400, 401, 404)},
                parameters=_USER_PARAM,
            ),
            "delete": _operation(
                "Unblock (idempotent; removed follows are not restored)",
                {"204": {"description": "not blocked"}, **_errors(401, 404)},
                parameters=_USER_PARAM,
            ),
        },
        "/me/blocks": {
            "get": _operation(
                "Users you blocked, most recent first",
                {"200": _json(_ref("BlockList"), "a page"), **_errors(400, 401)},
                parameters=_paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/mutes/{user_id}": {
            "post": _operation(
                "Mute a user (idempotent): their stories leave your feed only",
                {"200": _json(_ref("Mute"), "muted"), **_errors(400, 401, 404)},
                parameters=_USER_PARAM,
            ),
            "delete": _operation(
                "Unmute (idempotent)",
                {"204": {"description": "not muted"}, **_errors(401, 404)},
                parameters=_USER_PARAM,
            ),
        },
        "/me/mutes": {
            "get": _operation(
                "Users you muted, most recent first",
                {"200": _json(_ref("MuteList"), "a page"), **_errors(400, 401)},
                parameters=_paging(DEFAULT_LIST_LIMIT),
            )
        },
        "/me/stats": {
            "get": _operation(
                "Your stories of the last 7 days: posted, views, unique viewers, reactions per emoji",
                {"200": _json(_ref("Stats"), "the figures"), **_errors(401)},
            )
        },
        "/me/events": {
            "get": _operation(
                "Your realtime events over HTTP, oldest first (the last 7 days): the same messages as /ws. "
                "`after` is the id of the last event you have seen; when the log no longer holds it (older than "
                '7 days, or not one of yours) the page starts with {"type": "resync"}: refetch what you show. '
                "`next_cursor` is set when more events follow at once, else null (poll later with the last id).",
                {"200": _json(_ref("Events"), "a page"), **_errors(400, 401)},
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS_LIMIT, "default": 50},
                    },
                    _AFTER_PARAM,
                ],
            )
        },
        "/ws": {
            "get": _operation(
                "WebSocket upgrade: realtime events for your stories (story.viewed, story.reacted). Authenticate "
                "with the Authorization header or ?token=. With ?after=<last event id seen>, first every event "
                'since (oldest first, at most 7 days and 1,000, else a {"type": "resync"} message), then the '
                "live stream, with no gap and no duplicate. Client messages are ignored and capped at 4 KiB (1009). "
                "Close codes: 1001 server shutting down; 1008 too slow to keep up, an 11th socket of one user "
                "(the oldest closes), or the token expired; 1012 events were missed: reconnect with after=.",
                {"101": {"description": "switching protocols"}, **_errors(400, 401)},
                parameters=[{"name": "token", "in": "query", "schema": {"type": "string"}}, _AFTER_PARAM],
            )
        },
        "/healthz": {
            "get": _operation(
                "Health of the process and its dependencies",
                {"200": _json(_ref("Health"), "serving"), "503": _json(_ref("Health"), "database down")},
                public=True,
            )
        },
        "/readyz": {
            "get": _operation(
                "Readiness: 200 only while this process should get traffic (started, not draining, database up, "
                "event relay subscribed); checks add `relay` and `process` (starting, serving, draining)",
                {"200": _json(_ref("Health"), "ready"), "503": _json(_ref("Health"), "not ready")},
                public=True,
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics",
                {"200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}},
                public=True,
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Stories", "version": __version__, "description": "Ephemeral stories: HTTP API."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
        "security": [{"bearer": []}],
    }


# A self-contained page: no assets from the internet, it renders /openapi.json with a few lines of script.
_DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Stories API</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2rem}
.op{margin:.8rem 0;padding:.6rem .8rem;border:1px solid #e3e3e3;border-radius:6px}
.m{display:inline-block;min-width:4.5rem;font-weight:bold;text-transform:uppercase}
.get{color:#0a6}.post{color:#06c}.patch{color:#960}.delete{color:#c30}
code,pre{background:#f6f6f6;border-radius:4px;padding:.1rem .3rem}pre{padding:.5rem;overflow:auto}
.lock{color:#888;font-size:.85em}
</style></head>
<body><h1>Stories API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a>.
Routes marked 🔒 need <code>Authorization: Bearer &lt;token&gt;</code>.</p><div id="ops"></div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const out = document.getElementById('ops');
  const esc = s => String(s).replace(/[&<>]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;'}[c]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const locked = !(op.security && op.security.length === 0);
      const codes = Object.entries(op.responses).map(([c, r]) => `<li><b>${c}</b> ${esc(r.description)}</li>`).join('');
      const body = op.requestBody
        ? `<pre>${esc(JSON.stringify(op.requestBody.content['application/json'].schema, null, 2))}</pre>` : '';
      out.insertAdjacentHTML('beforeend', `<div class="op"><span class="m ${method}">${method}</span>
        <code>${esc(path)}</code> ${locked ? '<span class="lock">🔒</span>' : ''}<p>${esc(op.summary)}</p>${body}
        <ul>${codes}</ul></div>`);
    }
  }
});
</script></body></html>
"""


@blueprint.get("/openapi.json")
async def openapi() -> Response:
    return json_response(openapi_document())


@blueprint.get("/docs")
async def docs() -> Response:
    return Response(_DOCS_PAGE, 200, content_type="text/html; charset=utf-8")
