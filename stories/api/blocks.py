"""Blocks and mutes (API.md "Social graph"): POST/DELETE /blocks/{user_id}, /mutes/{user_id}; GET /me/blocks, /me/mutes.

The rules themselves are enforced in SQL on every read (stories/store/visibility.py); these views record
the changes and tell the feed cache (stories/api/social_routes.py), so each applies to the very next read on any
process:
a block or unblock changes what both users may see, a mute or unmute what the muter's feed shows.
"""

from __future__ import annotations

from stories.api.declare import DeclaredBlueprint
from stories.api.social_routes import Edge, OwnList, declare_edge

__all__ = ["blueprint"]

blueprint = DeclaredBlueprint("blocks", __name__)

BLOCKS = Edge(
    verb="block",
    path="/blocks/{user_id}",
    summary="Block a user (idempotent)",
    remove_summary="Unblock (idempotent; removed follows are not restored)",
    description="Removes the follows between you both ways; neither sees the other's stories nor can follow the other. "
    "400 for yourself; 404 for an unknown user.",
    schema="Block",
    ids=("blocker_id", "blocked_id"),
    added="blocked",
    gone="not blocked",
    logged="blocked",
    add=lambda store: store.block,
    remove=lambda store: store.unblock,
    both_feeds=True,
    own_list=OwnList(
        path="/me/blocks",
        operation_id="listBlocks",
        endpoint="my_blocks",
        summary="Users you blocked, most recent first",
        schema="BlockList",
        query=lambda store: store.blocks,
    ),
)
MUTES = Edge(
    verb="mute",
    path="/mutes/{user_id}",
    summary="Mute a user (idempotent): their stories leave your feed only",
    remove_summary="Unmute (idempotent)",
    description="400 for yourself; 404 for an unknown user.",
    schema="Mute",
    ids=("muter_id", "muted_id"),
    added="muted",
    gone="not muted",
    logged="muted",
    add=lambda store: store.mute,
    remove=lambda store: store.unmute,
    both_feeds=False,
    own_list=OwnList(
        path="/me/mutes",
        operation_id="listMutes",
        endpoint="my_mutes",
        summary="Users you muted, most recent first",
        schema="MuteList",
        query=lambda store: store.mutes,
    ),
)

declare_edge(blueprint, BLOCKS)
declare_edge(blueprint, MUTES)
