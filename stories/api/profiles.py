"""Profiles and follow lists (API.md "Profiles", "Social graph"): GET/PATCH /me, GET /users/{id}, its lists.

A display name is a user's only public identity: the email appears in GET /me and PATCH /me, to its owner,
and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

import structlog
from quart import Blueprint, Response

from stories.api.bodies import json_response, read_json_object
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.paging import cursor_arg, limit_arg, page_json
from stories.api.present import listed_json, profile_json
from stories.api.validate import display_name
from stories.errors import InvalidRequest, NotFound, Unauthorized

if TYPE_CHECKING:
    from stories.store.models import ListedUser

__all__ = ["DEFAULT_LIST_LIMIT", "blueprint", "parse_user_id"]

log = structlog.get_logger()
blueprint = Blueprint("profiles", __name__)

DEFAULT_LIST_LIMIT = 50
_EDITABLE = frozenset({"display_name"})


def parse_user_id(raw: str) -> UUID:
    """A malformed id names no user: 404, like an unknown one."""
    try:
        return UUID(raw)
    except ValueError:
        raise NotFound("no such user") from None


def _no_such_user() -> NotFound:
    return NotFound("no such user")


@blueprint.get("/me")
async def me() -> Response:
    profile = await deps().store.me(current_user_id())
    if profile is None:
        raise Unauthorized("the token's user does not exist; sign up or log in again")
    return json_response(profile_json(profile, own=True))


@blueprint.patch("/me")
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


@blueprint.get("/users/<id>")
async def user(id: str) -> Response:
    profile = await deps().store.profile(current_user_id(), parse_user_id(id))
    if profile is None:
        raise _no_such_user()
    return json_response(profile_json(profile, own=False))


def _follow_list(rows: list[ListedUser] | None, limit: int) -> Response:
    if rows is None:
        raise _no_such_user()
    return json_response(page_json("users", rows, limit, lambda entry: listed_json(entry, "followed_at")))


@blueprint.get("/users/<id>/followers")
async def followers(id: str) -> Response:
    user_id = parse_user_id(id)
    limit, cursor = limit_arg(DEFAULT_LIST_LIMIT), cursor_arg()
    rows = await deps().store.followers(current_user_id(), user_id, limit + 1, cursor)
    return _follow_list(rows, limit)


@blueprint.get("/users/<id>/following")
async def following(id: str) -> Response:
    user_id = parse_user_id(id)
    limit, cursor = limit_arg(DEFAULT_LIST_LIMIT), cursor_arg()
    rows = await deps().store.following(current_user_id(), user_id, limit + 1, cursor)
    return _follow_list(rows, limit)
