"""JSON in, JSON out: one place that parses request bodies and one that writes responses."""

from __future__ import annotations

from typing import Any

import orjson
from quart import Response, g, request

from stories.errors import ApiError, InvalidRequest

__all__ = ["UnsupportedMediaType", "error_response", "json_response", "read_json_object"]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


class UnsupportedMediaType(ApiError):
    status = 415
    code = "unsupported_media_type"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, content_type=JSON_CONTENT_TYPE)


def error_response(status: int, code: str, message: str, *, fields: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if fields:
        body["fields"] = fields
    return json_response(body, status)


async def read_json_object() -> dict[str, Any]:
    """The request body as a JSON object, or the documented 4xx (415 not JSON, 413 too large, 400 bad).

    The size cap is Quart's MAX_CONTENT_LENGTH, enforced while reading, so an oversized body is never
    buffered whole.
    """
    mimetype = request.mimetype
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("send the body as JSON with Content-Type: application/json")
    raw = await request.get_data(cache=True, as_text=False)
    g.body_read = True
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the request body is not valid JSON (UTF-8)") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body
