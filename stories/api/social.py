"""The social graph and the caller's own stats (API.md "Social graph", "Stats")."""

from __future__ import annotations

import structlog
from quart import Blueprint, Response

from stories.api.bodies import json_response
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.present import follow_json, stats_json
from stories.api.profiles import parse_user_id
from stories.clock import to_millis
from stories.domain import STATS_WINDOW
from stories.errors import InvalidRequest, NotFound

__all__ = ["blueprint"]

log = structlog.get_logger()
blueprint = Blueprint("social", __name__)


@blueprint.post("/follow/<user_id>")
async def follow(user_id: str) -> Response:
    followee_id = parse_user_id(user_id)
    follower_id = current_user_id()
    if followee_id == follower_id:
        raise InvalidRequest("you cannot follow yourself")
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(follower_id)
        result = await app.store.follow(follower_id, followee_id, to_millis(app.clock.now()))
    if result is None:
        raise NotFound("no such user")
    log.info("followed", followee_id=str(followee_id))
    return json_response(follow_json(result))


@blueprint.delete("/follow/<user_id>")
async def unfollow(user_id: str) -> Response:
    followee_id = parse_user_id(user_id)
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(current_user_id())
        await app.store.unfollow(current_user_id(), followee_id)
    log.info("unfollowed", followee_id=str(followee_id))
    return Response(b"", 204)


@blueprint.get("/me/stats")
async def my_stats() -> Response:
    app = deps()
    stats = await app.store.stats(current_user_id(), app.clock.now() - STATS_WINDOW)
    return json_response(stats_json(stats))
