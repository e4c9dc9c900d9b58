"""Blocks and mutes (API.md "Social graph"): POST/DELETE /blocks/{user_id}, /mutes/{user_id}; GET /me/blocks, /me/mutes.

The rules themselves are enforced in SQL on every read (stories/store/visibility.py); this module records
the changes and tells the feed cache, so each applies to the very next read on any process:
a block or unblock changes what both users may see, a mute or unmute what the muter's feed shows.
"""

from __future__ import annotations

import structlog
from quart import Blueprint, Response

from stories.api.bodies import json_response
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.paging import cursor_arg, limit_arg, page_json
from stories.api.present import block_json, listed_json, mute_json
from stories.api.profiles import DEFAULT_LIST_LIMIT, parse_user_id
from stories.clock import to_millis
from stories.errors import InvalidRequest, NotFound

__all__ = ["blueprint"]

log = structlog.get_logger()
blueprint = Blueprint("blocks", __name__)


@blueprint.post("/blocks/<user_id>")
async def block(user_id: str) -> Response:
    blocked_id = parse_user_id(user_id)
    blocker_id = current_user_id()
    if blocked_id == blocker_id:
        raise InvalidRequest("you cannot block yourself")
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(blocker_id, blocked_id)
        result = await app.store.block(blocker_id, blocked_id, to_millis(app.clock.now()))
    if result is None:
        raise NotFound("no such user")
    log.info("blocked", blocked_id=str(blocked_id))
    return json_response(block_json(result))


@blueprint.delete("/blocks/<user_id>")
async def unblock(user_id: str) -> Response:
    blocked_id = parse_user_id(user_id)
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(current_user_id(), blocked_id)
        await app.store.unblock(current_user_id(), blocked_id)
    log.info("unblocked", blocked_id=str(blocked_id))
    return Response(b"", 204)


@blueprint.get("/me/blocks")
async def my_blocks() -> Response:
    limit, cursor = limit_arg(DEFAULT_LIST_LIMIT), cursor_arg()
    rows = await deps().store.blocks(current_user_id(), limit + 1, cursor)
    return json_response(page_json("users", rows, limit, lambda entry: listed_json(entry, "blocked_at")))


@blueprint.post("/mutes/<user_id>")
async def mute(user_id: str) -> Response:
    muted_id = parse_user_id(user_id)
    muter_id = current_user_id()
    if muted_id == muter_id:
        raise InvalidRequest("you cannot mute yourself")
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(muter_id)
        result = await app.store.mute(muter_id, muted_id, to_millis(app.clock.now()))
    if result is None:
        raise NotFound("no such user")
    log.info("muted", muted_id=str(muted_id))
    return json_response(mute_json(result))


@blueprint.delete("/mutes/<user_id>")
async def unmute(user_id: str) -> Response:
    muted_id = parse_user_id(user_id)
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(current_user_id())
        await app.store.unmute(current_user_id(), muted_id)
    log.info("unmuted", muted_id=str(muted_id))
    return Response(b"", 204)


@blueprint.get("/me/mutes")
async def my_mutes() -> Response:
    limit, cursor = limit_arg(DEFAULT_LIST_LIMIT), cursor_arg()
    rows = await deps().store.mutes(current_user_id(), limit + 1, cursor)
    return json_response(page_json("users", rows, limit, lambda entry: listed_json(entry, "muted_at")))
