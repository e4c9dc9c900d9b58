"""POST /upload/presigned: a presigned PUT for one upload (API.md "Media uploads"). No media byte passes here."""

from __future__ import annotations

import unicodedata
import uuid
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from stories.actors.ratelimit import ACTION_UPLOADS
from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.idempotency import request_claim
from stories.api.json_io import json_response, read_json_object
from stories.api.openapi import (
    ALICE,
    IDEMPOTENCY_KEY,
    RETRY_AFTER,
    code_answer,
    error_answer,
    error_example,
    json_answer,
    key_reused,
    ref,
    replay_header,
)
from stories.api.rate import check_rate
from stories.api.validate import invalid, optional_string, required_string
from stories.clock import to_millis
from stories.errors import Conflict, RateLimited, StorageUnavailable
from stories.media.storage import UPLOAD_URL_SECONDS
from stories.store.uploads import Uploads

if TYPE_CHECKING:
    from datetime import datetime
    from uuid import UUID

    from quart import Response

    from stories.settings import Settings
    from stories.store.models import Replay

__all__ = ["CONTENT_TYPES", "MAX_FILE_NAME_LENGTH", "blueprint", "upload_key"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("media", __name__)

# The allow-list, and the extension each type's keys get (the client's file name is never trusted for it).
CONTENT_TYPES = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/webm": "webm",
}
MAX_FILE_NAME_LENGTH = 255
_UPLOAD_USED = "this upload's key is used by a story (or was deleted); ask for a new upload with a new Idempotency-Key"


def upload_key(user_id: UUID, content_type: str) -> str:
    """`uploads/<user_id>/<random>.<ext>`: 128 random bits, so keys can be neither guessed nor chosen."""
    return f"uploads/{user_id}/{uuid.uuid4().hex}.{CONTENT_TYPES[content_type]}"


def _content_type(body: dict[str, Any]) -> str:
    content_type = required_string(body, "content_type").strip().lower()
    if content_type not in CONTENT_TYPES:
        raise invalid("content_type", f"must be one of {', '.join(CONTENT_TYPES)}")
    return content_type


def _size(body: dict[str, Any], limit: int) -> int:
    size = body.get("size")
    # bool is an int in Python; JSON true is no size.
    if size is None or isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= limit:
        raise invalid("size", f"is required: the file's size in bytes, 1 to {limit}")
    return size


def _check_file_name(body: dict[str, Any]) -> None:
    """Optional, and only checked: a name a client shows its user, never a part of the key."""
    name = optional_string(body, "file_name")
    if name is None:
        return
    if not 1 <= len(name) <= MAX_FILE_NAME_LENGTH or name.strip() != name or name in (".", ".."):
        raise invalid("file_name", f"must be 1 to {MAX_FILE_NAME_LENGTH} characters, without surrounding spaces")
    if any(c in "/\\" or unicodedata.category(c) in ("Cc", "Cf") for c in name):
        raise invalid("file_name", "must be a file name, without path separators or control characters")


def _upload_body(settings: Settings) -> dict[str, Any]:
    """The body of POST /upload/presigned, as `presign` reads it."""
    return {
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


PRESIGN_UPLOAD = Route(
    "POST",
    "/upload/presigned",
    "presignUpload",
    "media",
    "A presigned PUT URL for one upload",
    {
        "200": json_answer(
            ref("Upload"),
            "PUT the file to upload_url with these headers and Content-Length = size",
            {
                "upload_url": "http://127.0.0.1:8333/stories-media/uploads/...&X-Amz-Signature=...",
                "method": "PUT",
                "headers": {"Content-Type": "image/jpeg"},
                "media_key": f"uploads/{ALICE}/4f9c2a7d1e8b4c3a9d6e5f0a1b2c3d4e.jpg",
                "expires_in": UPLOAD_URL_SECONDS,
            },
            headers=replay_header("true when this answers a retry: the same media_key, a fresh URL"),
        ),
        "409": code_answer(
            "upload_used", "a retry (same Idempotency-Key) of a presign whose key a story uses already", _UPLOAD_USED
        ),
        **key_reused("body"),
        "503": error_answer(
            "storage_unavailable: object storage is off (MINIO_ENDPOINT=off) or unreachable; "
            "database_unavailable, overloaded: as on every route",
            ("storage_unavailable", "database_unavailable", "overloaded"),
            error_example("storage_unavailable", "object storage is not configured on this server: uploads are off"),
            {
                "Retry-After": {
                    **RETRY_AFTER,
                    "description": "with overloaded: seconds to wait before retrying",
                }
            },
        ),
    },
    errors=(RateLimited,),
    description=lambda settings: (
        "The API never sees the file: the client PUTs it straight to the object store. The "
        "URL signs Content-Type and Content-Length, so the store refuses another type or size. Rate limit: "
        f"{settings.rate_limit_uploads_per_minute} per minute per user (429). With an Idempotency-Key, a retry "
        "with the same key and body within 24 h answers the same media_key with a fresh upload URL and issues no "
        "new key."
    ),
    body=_upload_body,
    body_example={"content_type": "image/jpeg", "file_name": "lake.jpg", "size": 123456},
    parameters=[IDEMPOTENCY_KEY],
    table_answer="`200` presigned upload",
)


@blueprint.declare(PRESIGN_UPLOAD)
async def presign_upload() -> Response:
    body = await read_json_object()
    content_type = _content_type(body)
    app = deps()
    size = _size(body, app.settings.max_upload_bytes)
    _check_file_name(body)
    if app.media is None:
        raise StorageUnavailable("object storage is not configured on this server: uploads are off")
    app.media.require()
    user_id = current_user_id()
    now = to_millis(app.clock.now())
    uploads = Uploads(app.store.database)
    claim = request_claim(body, _as_stored, scope="upload/presigned")
    if claim is not None:
        # A retry is answered before the rate limit, as for stories: it issues nothing new.
        replay = await app.store.idempotent_replay(user_id, claim, now)
        if replay is not None:
            return await _replayed(uploads, replay, claim.key, user_id, now, content_type, size)
    await check_rate(ACTION_UPLOADS, "asking for upload URLs")
    key = upload_key(user_id, content_type)
    answer = _answer(key, content_type, size)
    if claim is None:
        await uploads.issue(key, user_id, content_type, size, now)
    else:
        replay = await uploads.issue_once(key, user_id, content_type, size, now, claim, orjson.dumps(answer))
        if replay is not None:
            return await _replayed(uploads, replay, claim.key, user_id, now, content_type, size)
    log.info("upload.presigned", media_key=key, content_type=content_type, size=size)
    return json_response(answer)


def _as_stored(response: bytes) -> bytes:
    return response


def _answer(key: str, content_type: str, size: int) -> dict[str, Any]:
    """The response for `key`, with an upload URL signed now."""
    app = deps()
    assert app.media is not None  # checked by the route first
    return {
        "upload_url": app.media.storage.presign_put(key, content_type, size),
        "method": "PUT",
        "headers": {"Content-Type": content_type},
        "media_key": key,
        "expires_in": UPLOAD_URL_SECONDS,
    }


async def _replayed(
    uploads: Uploads, replay: Replay, idempotency_key: str, user_id: UUID, now: datetime, content_type: str, size: int
) -> Response:
    """The first response's key, issued again with a fresh upload URL (the stored one may have expired); a
    `409 upload_used` when a story uses the key already: a new URL for it would let its bytes change."""
    key = orjson.loads(replay.response)["media_key"]
    if not await uploads.reissue(key, user_id, now):
        raise Conflict(_UPLOAD_USED, code="upload_used")
    log.info("upload.replayed", media_key=key, idempotency_key=idempotency_key)
    response = json_response(_answer(key, content_type, size))
    response.headers["Idempotent-Replay"] = "true"
    return response
