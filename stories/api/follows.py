"""Follows: follow and unfollow a user (API.md "Social graph"; blocks and mutes are in blocks.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.api.declare import DeclaredBlueprint
from stories.api.openapi import ALICE, AT, BOB
from stories.api.social_routes import Edge, add_edge, add_edge_route, remove_edge, remove_edge_route

if TYPE_CHECKING:
    from uuid import UUID

    from quart import Response

__all__ = ["blueprint"]

blueprint = DeclaredBlueprint("follows", __name__)


FOLLOWS = Edge(
    "follow",
    "followed",
    "followee_id",
    lambda store: store.follow,
    lambda store: store.unfollow,
    both_feeds=False,
)

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
    return await add_edge(FOLLOWS, user_id)


UNFOLLOW = remove_edge_route("/follow/{user_id}", "unfollow", "Unfollow a user (idempotent)", "not following")


@blueprint.declare(UNFOLLOW)
async def unfollow(user_id: UUID) -> Response:
    return await remove_edge(FOLLOWS, user_id)
