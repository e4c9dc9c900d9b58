"""The social graph's edges (API.md "Social graph"): follows, blocks and mutes, each added with POST, removed with
DELETE and (blocks and mutes) listed under /me, each declared once as an `Edge` (stories/api/social_routes.py
declares its routes and views). Follow lists are in profiles.py.

The rules themselves are enforced in SQL on every read (stories/store/visibility.py); these views record the
changes and tell the feed cache, so each applies to the very next read on any process: a block or unblock changes
what both users may see, a follow, a mute or their undoing what the caller's feed shows.
"""

from __future__ import annotations

from stories.api.declare import DeclaredBlueprint
from stories.api.social_routes import Edge, OwnList, declare_edge

__all__ = ["blocks_blueprint", "follows_blueprint"]

# Two blueprints, so the endpoints keep their names ("follows.follow", "blocks.block" ...); docs/API.md's route
# table lists the follows before the stats, the blocks and mutes after them (BLUEPRINTS, stories/api/__init__.py).
follows_blueprint = DeclaredBlueprint("follows", __name__)
blocks_blueprint = DeclaredBlueprint("blocks", __name__)

FOLLOWS = Edge(
    verb="follow",
    path="/follow/{user_id}",
    summary="Follow a user (idempotent)",
    remove_summary="Unfollow a user (idempotent)",
    description="400 for yourself; 404 for an unknown user or one in a block with you.",
    schema="Follow",
    ids=("follower_id", "followee_id"),
    added="following",
    gone="not following",
    logged="followed",
    add=lambda store: store.follow,
    remove=lambda store: store.unfollow,
    both_feeds=False,
)

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

declare_edge(follows_blueprint, FOLLOWS)
declare_edge(blocks_blueprint, BLOCKS)
declare_edge(blocks_blueprint, MUTES)
