"""Idempotency-Key on the routes that create something (API.md "Stories"): the header, and the claim it makes.

A route reads its claim with `request_claim` (None without the header), asks `Store.idempotent_replay` before
its rate limit (a retry creates nothing, so it never costs a token), then passes the claim to the store method
that creates, which claims the key in the same transaction (stories/store/idempotency.py). A replay is
answered with `replayed`.
"""

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

__all__ = ["idempotency_key", "replayed", "request_claim"]

log = structlog.get_logger()

T = TypeVar("T")

_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")


def idempotency_key() -> str | None:
    """The request's Idempotency-Key (1..255 visible ASCII characters, else 400), or None."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise InvalidRequest("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def request_claim(
    body: dict[str, Any], render: Callable[[T], bytes], *, scope: str | None = None
) -> IdempotencyClaim[T] | None:
    """The claim of this request's Idempotency-Key, or None without one. Same key + same JSON (key order and
    spacing aside) + same `scope` = the same request; `scope` names what else identifies it (the route and its
    path parameters), so one key used on two routes, or on two stories, is a reuse (422)."""
    key = idempotency_key()
    if key is None:
        return None
    hashed = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    if scope is not None:
        hashed = scope.encode() + b"\n" + hashed
    return IdempotencyClaim(key=key, request_hash=hashlib.sha256(hashed).digest(), render=render)


def replayed(replay: Replay, key: str, status: int = 201) -> Response:
    """The stored response of the request that first used `key`, marked as a replay."""
    log.info("request.replayed", idempotency_key=key)
    return Response(replay.response, status, content_type=JSON_CONTENT_TYPE, headers={"Idempotent-Replay": "true"})
