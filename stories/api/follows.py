"""Follows: follow and unfollow a user (API.md "Social graph"; blocks and mutes are in blocks.py)."""

from __future__ import annotations

from stories.api.declare import DeclaredBlueprint
from stories.api.social_routes import Edge, declare_edge

__all__ = ["blueprint"]

blueprint = DeclaredBlueprint("follows", __name__)

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

declare_edge(blueprint, FOLLOWS)
