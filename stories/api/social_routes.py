"""The shapes the social-graph routes share (API.md "Social graph"): an edge to another user that you add with
POST and remove with DELETE (follow, block, mute: declaration and view), and a page of users with the time each
was listed (followers, following, your blocks and mutes: declaration). Each route still states its own path, names
and words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from quart import Response

from stories.api.declare import Route
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.json_io import json_response
from stories.api.json_shapes import edge_json, listed_json
from stories.api.openapi import json_answer, paging, path_id, ref
from stories.api.paging import DEFAULT_LIST_LIMIT, cursor_arg, limit_arg, page_json
from stories.clock import to_millis
from stories.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime
    from uuid import UUID

    from stories.store import Store
    from stories.store.models import Block, Follow, ListedUser, Mute, Position

__all__ = [
    "Edge",
    "add_edge",
    "add_edge_route",
    "own_user_page",
    "remove_edge",
    "remove_edge_route",
    "user_page_route",
]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class Edge:
    """One kind of edge from the caller to another user, as its two views use it."""

    # "you cannot <verb> yourself"
    verb: str
    # The log events: `logged` after adding, "un" + `logged` after removing, with the other user's id as `field`.
    logged: str
    field: str
    # The store's method, looked up on the store each time (`lambda store: store.block`): a Store subclass's own
    # method (tests/api/test_effects.py) is the one called.
    add: Callable[[Store], Callable[[UUID, UUID, datetime], Awaitable[Follow | Block | Mute | None]]]
    remove: Callable[[Store], Callable[[UUID, UUID], Awaitable[None]]]
    # A block changes what both users may see; a follow or a mute only what the caller's feed shows.
    both_feeds: bool


async def add_edge(edge: Edge, other_id: UUID) -> Response:
    me = current_user_id()
    if other_id == me:
        raise InvalidRequest(f"you cannot {edge.verb} yourself")
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(*((me, other_id) if edge.both_feeds else (me,)))
        result = await edge.add(app.store)(me, other_id, to_millis(app.clock.now()))
    if result is None:
        raise NotFound("no such user")
    log.info(edge.logged, **{edge.field: str(other_id)})
    return json_response(edge_json(result))


async def remove_edge(edge: Edge, other_id: UUID) -> Response:
    me = current_user_id()
    app = deps()
    async with after_commit(app) as effects:
        effects.feed_changed(*((me, other_id) if edge.both_feeds else (me,)))
        await edge.remove(app.store)(me, other_id)
    log.info("un" + edge.logged, **{edge.field: str(other_id)})
    return Response(b"", 204)


async def own_user_page(
    query: Callable[[Store], Callable[[UUID, int, Position | None], Awaitable[list[ListedUser]]]], at_field: str
) -> Response:
    """A page of the caller's own list of users (`query`: the store's blocks or mutes, looked up as for `Edge`),
    each with the time it was listed as `at_field`."""
    limit, cursor = limit_arg(DEFAULT_LIST_LIMIT), cursor_arg()
    rows = await query(deps().store)(current_user_id(), limit + 1, cursor)
    return json_response(page_json("users", rows, limit, lambda entry: listed_json(entry, at_field)))


def add_edge_route(
    path: str, operation_id: str, summary: str, schema: str, answer: str, example: dict[str, Any], description: str
) -> Route:
    """POST `path` (`{user_id}` in it): idempotent, 200 with the edge (`schema`), 400 for yourself, 404 for an
    unknown user."""
    return Route(
        "POST",
        path,
        operation_id,
        "social",
        summary,
        {"200": json_answer(ref(schema), answer, example)},
        errors=(InvalidRequest,),
        description=description,
        parameters=path_id("user_id", "user"),
        table_answer=f"`200` {schema.lower()}",
    )


def remove_edge_route(path: str, operation_id: str, summary: str, gone: str) -> Route:
    """DELETE `path` (`{user_id}` in it): idempotent, 204 (`gone` says what is true after)."""
    return Route(
        "DELETE",
        path,
        operation_id,
        "social",
        summary,
        {"204": {"description": gone}},
        parameters=path_id("user_id", "user"),
        table_answer="`204`",
    )


def user_page_route(
    path: str,
    operation_id: str,
    summary: str,
    schema: str,
    example: dict[str, Any],
    *,
    of_user: str | None = None,
    description: str | None = None,
) -> Route:
    """GET `path`: a page of users (`schema`). `of_user` names the path parameter of the user whose list it is
    (404 when unknown); without it the list is the caller's own."""
    return Route(
        "GET",
        path,
        operation_id,
        "social",
        summary,
        {"200": json_answer(ref(schema), "a page", example)},
        description=description,
        parameters=(path_id(of_user, "user") if of_user else []) + paging(DEFAULT_LIST_LIMIT),
        table_answer="`200` page of users",
    )
