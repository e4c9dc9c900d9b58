"""The building blocks of the OpenAPI document: shared schemas, parameters, error answers and examples.

Each route's declaration (stories/api/declare.py) builds its operation from these; stories/api/docs.py puts the
declared operations and the shared components together into `/openapi.json`. Nothing here imports a blueprint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stories.api.paging import MAX_LIMIT
from stories.api.validate import MAX_DISPLAY_NAME_LENGTH
from stories.errors import AccountSuspended, InvalidRequest, NotFound, RateLimited, Unauthorized, Unavailable

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stories.errors import ApiError
    from stories.settings import Settings

__all__ = [
    "AFTER_PARAM",
    "ALICE",
    "AT",
    "BAD_REQUEST",
    "BOB",
    "COUNT",
    "CURSOR",
    "DISPLAY_NAME",
    "EMAIL",
    "EVENT_EXAMPLE",
    "EVENT_ID",
    "FOLLOW_COUNTS",
    "IDEMPOTENCY_KEY",
    "NEXT_CURSOR",
    "PASSWORD",
    "RETRY_AFTER",
    "SESSION_EXAMPLE",
    "SESSION_ID",
    "STORY",
    "STORY_EXAMPLE",
    "STORY_LINKS",
    "TIME",
    "TRAY_EXAMPLE",
    "UNAUTHORIZED",
    "USERS_EXAMPLE",
    "USER_LINKS",
    "UUID_SCHEMA",
    "VISIBILITY",
    "WWW_AUTHENTICATE",
    "closed_object",
    "code_answer",
    "error_answer",
    "error_example",
    "error_responses",
    "idempotency_key_param",
    "json_answer",
    "key_reused",
    "limit_param",
    "links",
    "operation",
    "page",
    "paging",
    "path_id",
    "ref",
    "replay_header",
    "shared",
    "shared_errors",
    "user_list",
]

# ---------------------------------------------------------------------------------------------------------------
# Building blocks of the document

UUID_SCHEMA = {"type": "string", "format": "uuid", "examples": ["0b5a3f4e-6c1d-4e8a-9f1e-2d3c4b5a6f70"]}
TIME = {
    "type": "string",
    "format": "date-time",
    "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$",
    "description": "RFC 3339, UTC, milliseconds",
    "examples": ["2026-11-24T10:00:00.123Z"],
}
COUNT = {"type": "integer", "minimum": 0}
NEXT_CURSOR = {"type": ["string", "null"], "description": "pass as ?cursor= for the next page; null on the last page"}
DISPLAY_NAME = {
    "type": ["string", "null"],
    "minLength": 1,
    "maxLength": MAX_DISPLAY_NAME_LENGTH,
    "description": f"1 to {MAX_DISPLAY_NAME_LENGTH} characters after trimming, no control characters; null: none",
    "examples": ["Ada"],
}
VISIBILITY = {"enum": ["public", "friends", "private"]}

ALICE = "0b5a3f4e-6c1d-4e8a-9f1e-2d3c4b5a6f70"
BOB = "6f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"
STORY = "3c9d1e2f-7a8b-4c5d-9e0f-1a2b3c4d5e6f"
AT = "2026-11-24T10:00:00.123Z"
CURSOR = "MTc2Mzk3ODQwMDEyMzAwMDozYzlkMWUyZi03YThiLTRjNWQtOWUwZi0xYTJiM2M0ZDVlNmY"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def closed_object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """A response object: exactly these properties, all present but `optional`."""
    return {
        "type": "object",
        "required": [name for name in properties if name not in optional],
        "properties": properties,
        "additionalProperties": False,
    }


def json_answer(schema: dict[str, Any], description: str, example: Any = None, **extra: Any) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"description": description, "content": {"application/json": media}, **extra}


def page(items: str, entry: dict[str, Any]) -> dict[str, Any]:
    return closed_object({items: {"type": "array", "items": entry}, "next_cursor": NEXT_CURSOR})


def user_list(at_field: str) -> dict[str, Any]:
    return page("users", closed_object({"user_id": UUID_SCHEMA, "display_name": DISPLAY_NAME, at_field: TIME}))


def limit_param(default: int, maximum: int = MAX_LIMIT) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "description": f"page size, 1 to {maximum} (400 outside)",
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


def paging(default: int, maximum: int = MAX_LIMIT) -> list[dict[str, Any]]:
    """`limit` and `cursor`: a keyset page."""
    return [
        limit_param(default, maximum),
        {
            "name": "cursor",
            "in": "query",
            "description": "next_cursor of the page before (opaque; 400 when it is not one this API issued)",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
            "example": CURSOR,
        },
    ]


def replay_header(description: str) -> dict[str, Any]:
    """The `Idempotent-Replay` header of a create's answer to a retry (stories/api/idempotency.py sets it)."""
    return {"Idempotent-Replay": {"description": description, "schema": {"const": "true"}}}


def key_reused(what: str) -> dict[str, Any]:
    """The 422 of a create whose Idempotency-Key came with another `what` (body, story, target...)."""
    return {
        "422": code_answer(
            "idempotency_key_reused",
            f"this Idempotency-Key came with another {what}",
            "this Idempotency-Key was used with a different request body",
        )
    }


def idempotency_key_param(example: str, note: str = "") -> dict[str, Any]:
    """The header of a create that may be retried (stories/api/idempotency.py checks it); `note` ends its
    description."""
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "1 to 255 visible ASCII characters, honoured per user for 24 h" + note,
        "schema": {"type": "string", "pattern": r"^[\x21-\x7e]{1,255}$"},
        "example": example,
    }


IDEMPOTENCY_KEY = idempotency_key_param("b7f3c0de-retry-1")
# An event id: 32 lower-case hex digits, ordered as strings.
EVENT_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
AFTER_PARAM = {
    "name": "after",
    "in": "query",
    "description": "the id of the last event you have seen (400 when malformed; one the log no longer holds, or "
    'not yours, gives {"type": "resync"})',
    "schema": EVENT_ID,
    "example": "000000000000030a0000000000000003",
}
EVENT_EXAMPLE = {
    "type": "story.reacted",
    "id": "000000000000030a0000000000000003",
    "payload": {"story_id": STORY, "user_id": BOB, "emoji": "🔥", "created_at": AT},
}


def path_id(name: str, what: str) -> list[dict[str, Any]]:
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


def error_example(code: str, message: str, **fields: str) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return body


def error_answer(
    description: str, codes: tuple[str, ...], example: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    schema = {
        "allOf": [ref("Error"), {"type": "object", "properties": {"error": {"enum": list(codes)}}}],
    }
    response = json_answer(schema, description, example)
    if headers:
        response["headers"] = headers
    return response


def code_answer(
    code: str, meaning: str, message: str, headers: dict[str, Any] | None = None, **fields: str
) -> dict[str, Any]:
    """The answer of one error code: "<code>: <meaning>", with an example body of `message` (and `fields`)."""
    return error_answer(f"{code}: {meaning}", (code,), error_example(code, message, **fields), headers)


RETRY_AFTER = {
    "description": "seconds to wait before retrying",
    "schema": {"type": "integer", "minimum": 1},
}
WWW_AUTHENTICATE = {"description": 'Bearer realm="stories"', "schema": {"type": "string"}}


def error_responses(settings: Settings) -> dict[str, Any]:
    """components.responses: the error answers API.md's Conventions list, one per status and meaning."""
    max_body = settings.max_body_bytes
    return {
        "BadRequest": code_answer(
            "invalid_request",
            "malformed JSON, wrong types or invalid values (`fields` names the culprits)",
            "limit: must be a whole number from 1 to 100",
            limit="invalid",
        ),
        "Unauthorized": error_answer(
            "unauthorized: a missing, malformed, expired or badly signed token, one issued before sessions (no "
            "sid), or one whose user does not exist; session_revoked: the token's session was revoked (logout, "
            "a password change, a revoked session, a reused refresh token) on any process within 1 s",
            ("unauthorized", "session_revoked"),
            error_example("unauthorized", "missing Authorization: Bearer <token> header"),
            {"WWW-Authenticate": WWW_AUTHENTICATE},
        ),
        "Suspended": code_answer(
            "account_suspended",
            "a moderator suspended this account (on every process within 1 s)",
            "this account is suspended",
        ),
        "NotFound": code_answer(
            "not_found",
            "unknown, or not visible to you (a malformed id too)",
            "no such story (it may have expired, or is not visible to you)",
        ),
        "PayloadTooLarge": code_answer(
            "payload_too_large",
            f"the body is larger than {max_body} bytes",
            f"the request body is larger than {max_body} bytes",
        ),
        "UnsupportedMediaType": code_answer(
            "unsupported_media_type",
            "the body is not sent as JSON",
            "send the body as JSON with Content-Type: application/json",
        ),
        "RateLimited": code_answer(
            "rate_limited",
            "wait Retry-After seconds",
            "story creation is limited to 20 per minute",
            {"Retry-After": {**RETRY_AFTER, "required": True}},
        ),
        "Unavailable": error_answer(
            "database_unavailable: the database does not answer; overloaded: no database connection within "
            "DB_ACQUIRE_TIMEOUT_SECONDS, or the request ran past REQUEST_TIMEOUT_SECONDS (with Retry-After). "
            "A write answered 503 may still have committed.",
            ("database_unavailable", "overloaded"),
            error_example("overloaded", "the request took longer than 10 s; retry shortly"),
            {"Retry-After": {**RETRY_AFTER, "description": "with overloaded: seconds to wait before retrying"}},
        ),
    }


# The shared error answer (components.responses) of each error a route may name in `Route.errors`.
_SHARED_ANSWER_OF: dict[type[ApiError], str] = {
    InvalidRequest: "BadRequest",
    Unauthorized: "Unauthorized",
    AccountSuspended: "Suspended",
    NotFound: "NotFound",
    RateLimited: "RateLimited",
    Unavailable: "Unavailable",
}
# Each shared answer's status: its error's own, and werkzeug's for the two bodies it refuses itself.
_STATUS_OF = {name: str(error.status) for error, name in _SHARED_ANSWER_OF.items()} | {
    "PayloadTooLarge": "413",
    "UnsupportedMediaType": "415",
}


def shared(*names: str) -> dict[str, Any]:
    return {_STATUS_OF[name]: {"$ref": f"#/components/responses/{name}"} for name in names}


def shared_errors(errors: Iterable[type[ApiError]]) -> dict[str, Any]:
    return shared(*(_SHARED_ANSWER_OF[error] for error in errors))


def operation(
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


def links(field: str, targets: dict[str, str]) -> dict[str, Any]:
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


FOLLOW_COUNTS = {"followers": COUNT, "following": COUNT}


BAD_REQUEST = shared("BadRequest")
# Every route that needs a token: its session may be revoked, its user suspended.
UNAUTHORIZED = shared("Unauthorized", "Suspended")


STORY_LINKS = links(
    "id",
    {
        "getStory": "id",
        "viewStory": "id",
        "reactToStory": "id",
        "listViewers": "id",
        "deleteStory": "id",
    },
)
USER_LINKS = links(
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
EMAIL = {
    "type": "string",
    "maxLength": 254,
    # API.md: one @, a dot in the domain; trimmed and lower-cased by the server.
    "pattern": r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$",
    "examples": ["ada@example.com"],
}
PASSWORD = {"type": "string", "minLength": 8, "maxLength": 128, "examples": ["correct horse battery"]}
