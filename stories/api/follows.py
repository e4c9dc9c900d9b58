"""Follows: follow and unfollow a user (API.md "Social graph"; blocks and mutes are in blocks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from quart import Response

from stories.api.declare import DeclaredBlueprint
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.json_io import json_response
from stories.api.json_shapes import follow_json
from stories.api.openapi import (
    ALICE,
    AT,
    BOB,
)
from stories.api.social_routes import add_edge_route, remove_edge_route
from stories.clock import to_millis
from stories.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from uuid import UUID

__all__ = ["blueprint"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("follows", __name__)


FOLLOW = add_edge_route(
    "/follow/{user_id}",
    "follow",
    "Follow a user (idempotent)",
    "Follow",
    "following",
    {"follower_id": ALICE, "followee_id": BOB, "created_at": AT},
    "400 for yourself; 404 for an unknown user or one in a block with you.",
)


@blueprint.declare(FOLLOW)
async def follow(user_id: UUID) -> Response:
    followee_id = user_id
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


UNFOLLOW = remove_edge_route("/follow/{user_id}", "unfollow", "Unfollow a user (idempotent)", "not following")


@blueprint.declare(UNFOLLOW)
async def unfollow(user_id: UUID) -> Response:
    followee_id = user_id
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(current_user_id())
        await app.store.unfollow(current_user_id(), followee_id)
    log.info("unfollowed", followee_id=str(followee_id))
    return Response(b"", 204)
