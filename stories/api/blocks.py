"""Blocks and mutes (API.md "Social graph"): POST/DELETE /blocks/{user_id}, /mutes/{user_id}; GET /me/blocks, /me/mutes.

The rules themselves are enforced in SQL on every read (stories/store/visibility.py); these views record
the changes and tell the feed cache (stories/api/social_routes.py), so each applies to the very next read on any
process:
a block or unblock changes what both users may see, a mute or unmute what the muter's feed shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stories.api.declare import DeclaredBlueprint
from stories.api.openapi import ALICE, AT, BOB
from stories.api.social_routes import (
    Edge,
    add_edge,
    add_edge_route,
    own_user_page,
    remove_edge,
    remove_edge_route,
    user_page_route,
)

if TYPE_CHECKING:
    from uuid import UUID

    from quart import Response

__all__ = ["blueprint"]

blueprint = DeclaredBlueprint("blocks", __name__)


BLOCKS = Edge(
    "block",
    "blocked",
    "blocked_id",
    lambda store: store.block,
    lambda store: store.unblock,
    both_feeds=True,
)

BLOCK = add_edge_route(
    "/blocks/{user_id}",
    "block",
    "Block a user (idempotent)",
    "Block",
    "blocked",
    {"blocker_id": ALICE, "blocked_id": BOB, "created_at": AT},
    "Removes the follows between you both ways; neither sees the other's stories nor can "
    "follow the other. 400 for yourself; 404 for an unknown user.",
)


@blueprint.declare(BLOCK)
async def block(user_id: UUID) -> Response:
    return await add_edge(BLOCKS, user_id)


UNBLOCK = remove_edge_route(
    "/blocks/{user_id}", "unblock", "Unblock (idempotent; removed follows are not restored)", "not blocked"
)


@blueprint.declare(UNBLOCK)
async def unblock(user_id: UUID) -> Response:
    return await remove_edge(BLOCKS, user_id)


LIST_BLOCKS = user_page_route(
    "/me/blocks",
    "listBlocks",
    "Users you blocked, most recent first",
    "BlockList",
    {"users": [{"user_id": BOB, "display_name": "Bob", "blocked_at": AT}], "next_cursor": None},
)


@blueprint.declare(LIST_BLOCKS)
async def my_blocks() -> Response:
    return await own_user_page(lambda store: store.blocks, "blocked_at")


MUTES = Edge("mute", "muted", "muted_id", lambda store: store.mute, lambda store: store.unmute, both_feeds=False)

MUTE = add_edge_route(
    "/mutes/{user_id}",
    "mute",
    "Mute a user (idempotent): their stories leave your feed only",
    "Mute",
    "muted",
    {"muter_id": ALICE, "muted_id": BOB, "created_at": AT},
    "400 for yourself; 404 for an unknown user.",
)


@blueprint.declare(MUTE)
async def mute(user_id: UUID) -> Response:
    return await add_edge(MUTES, user_id)


UNMUTE = remove_edge_route("/mutes/{user_id}", "unmute", "Unmute (idempotent)", "not muted")


@blueprint.declare(UNMUTE)
async def unmute(user_id: UUID) -> Response:
    return await remove_edge(MUTES, user_id)


LIST_MUTES = user_page_route(
    "/me/mutes",
    "listMutes",
    "Users you muted, most recent first",
    "MuteList",
    {"users": [{"user_id": BOB, "display_name": "Bob", "muted_at": AT}], "next_cursor": None},
)


@blueprint.declare(LIST_MUTES)
async def my_mutes() -> Response:
    return await own_user_page(lambda store: store.mutes, "muted_at")
