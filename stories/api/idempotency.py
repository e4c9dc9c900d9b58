"""The `Idempotency-Key` header (API.md "Stories"), for every route that creates something: read and check the
key, claim it with the request's hash, answer a replay. The store claims the key in the creating transaction
(stories/store/queries.py `claim_key`)."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import structlog
from quart import Response, request

from stories.api.bodies import JSON_CONTENT_TYPE
from stories.errors import InvalidRequest
from stories.store.models import IdempotencyClaim

if TYPE_CHECKING:
    from collections.abc import Callable

    from stories.store.models import Replay

__all__ = ["idempotency_claim", "replayed"]

log = structlog.get_logger()

T = TypeVar("T")

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def idempotency_claim(
    body: dict[str, Any], render: Callable[[T], bytes], *, target: str = ""
) -> IdempotencyClaim[T] | None:
    """The request's claim when it carries an Idempotency-Key (a malformed key: 400), else None. Same key + same
    JSON (key order and spacing aside) + same `target` (what the route acts on, e.g. the reported story's path)
    = the same request."""
    key = _idempotency_key()
    if key is None:
        return None
    request_hash = hashlib.sha256(target.encode() + orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
    return IdempotencyClaim(key=key, request_hash=request_hash, render=render)


def replayed(replay: Replay, claim: IdempotencyClaim[Any] | None) -> Response:
    """The original `201` response of a retried request."""
    log.info("idempotency.replayed", idempotency_key=None if claim is None else claim.key)
    return Response(replay.response, 201, content_type=JSON_CONTENT_TYPE, headers={"Idempotent-Replay": "true"})
