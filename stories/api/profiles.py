"""Profiles and follow lists (API.md "Profiles", "Social graph"): GET/PATCH /me, GET /users/{id}, its lists.

A display name is a user's only public identity: the email appears in GET /me and PATCH /me, to its owner,
and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.json_io import json_response, read_json_object
from stories.api.json_shapes import listed_json, profile_json
from stories.api.openapi import ALICE, AT, BOB, DISPLAY_NAME, USERS_EXAMPLE, json_answer, path_id, ref
from stories.api.paging import DEFAULT_LIST_LIMIT, cursor_arg, limit_arg, page_json
from stories.api.social_routes import user_page_route
from stories.api.validate import display_name
from stories.errors import InvalidRequest, NotFound, UserGone

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from uuid import UUID

    from quart import Response

    from stories.store import Store
    from stories.store.models import ListedUser, Position

    # The store's followers or following (looked up on the store each time, so a subclass's own is called):
    # (reader, user, limit, cursor) -> a page, None for no such user.
    FollowQuery = Callable[[Store], Callable[[UUID, UUID, int, Position | None], Awaitable[list[ListedUser] | None]]]

__all__ = ["blueprint"]

log = structlog.get_logger()
blueprint = DeclaredBlueprint("profiles", __name__)

_EDITABLE = frozenset({"display_name"})


def _no_such_user() -> NotFound:
    return NotFound("no such user")


GET_ME = Route(
    "GET",
    "/me",
    "getMe",
    "profiles",
    "Your profile (the only place your email appears)",
    {
        "200": json_answer(
            ref("Me"),
            "you",
            {
                "user_id": ALICE,
                "email": "ada@example.com",
                "display_name": "Ada",
                "created_at": AT,
                "followers": 12,
                "following": 3,
            },
        )
    },
    table_answer="`200` own profile",
)


@blueprint.declare(GET_ME)
async def me() -> Response:
    profile = await deps().store.me(current_user_id())
    if profile is None:
        raise UserGone()
    return json_response(profile_json(profile, own=True))


UPDATE_ME = Route(
    "PATCH",
    "/me",
    "updateMe",
    "profiles",
    "Change your display name",
    {"200": json_answer(ref("Me"), "you, changed")},
    description="Only display_name can be changed: any other field is a 400. An empty object changes nothing.",
    body={"type": "object", "properties": {"display_name": DISPLAY_NAME}, "additionalProperties": False},
    body_example={"display_name": "Ada L."},
    table_answer="`200` own profile",
)


@blueprint.declare(UPDATE_ME)
async def update_me() -> Response:
    body = await read_json_object()
    unknown = sorted(set(body) - _EDITABLE)
    if unknown:
        # Ignoring them would let a client believe, say, its email changed.
        raise InvalidRequest(
            f"only display_name can be changed here, not {', '.join(unknown)}",
            fields=dict.fromkeys(unknown, "cannot be changed"),
        )
    app = deps()
    user_id = current_user_id()
    if "display_name" not in body:
        return await me()
    async with after_commit(app) as effects:
        # The caller's own stories in their cached feed pages carry the old name.
        effects.feed_changed(user_id)
        profile = await app.store.set_display_name(user_id, display_name(body))
    log.info("display_name_changed", has_name=profile.display_name is not None)
    return json_response(profile_json(profile, own=True))


GET_USER = Route(
    "GET",
    "/users/{id}",
    "getUser",
    "profiles",
    "A user's public profile",
    {
        "200": json_answer(
            ref("Profile"),
            "the profile",
            {
                "user_id": BOB,
                "display_name": "Bob",
                "created_at": AT,
                "followers": 4,
                "following": 7,
                "followed_by_me": True,
                "follows_me": False,
            },
        )
    },
    description="404 when the user is unknown or has blocked you.",
    parameters=path_id("id", "user"),
    table_answer="`200` profile",
)


@blueprint.declare(GET_USER)
async def user(id: UUID) -> Response:
    profile = await deps().store.profile(current_user_id(), id)
    if profile is None:
        raise _no_such_user()
    return json_response(profile_json(profile, own=False))


async def _follow_list(query: FollowQuery, user_id: UUID) -> Response:
    """A page of `query` (the store's followers or following) about `user_id`, as the caller may see it."""
    limit, cursor = limit_arg(DEFAULT_LIST_LIMIT), cursor_arg()
    rows = await query(deps().store)(current_user_id(), user_id, limit + 1, cursor)
    if rows is None:
        raise _no_such_user()
    return json_response(page_json("users", rows, limit, lambda entry: listed_json(entry, "followed_at")))


def _follow_list_route(path: str, operation_id: str, summary: str) -> Route:
    return user_page_route(
        path,
        operation_id,
        summary,
        "FollowList",
        USERS_EXAMPLE,
        of_user="id",
        description="Users in a block with you are left out; 404 when the user is unknown or has blocked you.",
    )


LIST_FOLLOWERS = _follow_list_route(
    "/users/{id}/followers", "listFollowers", "Who follows a user, most recent follow first"
)


@blueprint.declare(LIST_FOLLOWERS)
async def followers(id: UUID) -> Response:
    return await _follow_list(lambda store: store.followers, id)


LIST_FOLLOWING = _follow_list_route(
    "/users/{id}/following", "listFollowing", "Whom a user follows, most recent follow first"
)


@blueprint.declare(LIST_FOLLOWING)
async def following(id: UUID) -> Response:
    return await _follow_list(lambda store: store.following, id)
