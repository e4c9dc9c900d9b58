"""The shapes the social-graph routes share (API.md "Social graph"): an edge to another user that you add with
POST, remove with DELETE and list under /me (follow, block, mute: one `Edge` declares its routes and views), and a
page of users with the time each was listed (followers, following, your blocks and mutes: declaration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from quart import Response

from stories.api.declare import DeclaredBlueprint, Route
from stories.api.deps import current_user_id, deps
from stories.api.effects import after_commit
from stories.api.json_io import json_response
from stories.api.json_shapes import edge_json, listed_json
from stories.api.openapi import ALICE, AT, BOB, json_answer, paging, path_id, ref
from stories.api.paging import DEFAULT_LIST_LIMIT, cursor_arg, limit_arg, page_json
from stories.clock import to_millis
from stories.errors import InvalidRequest, NotFound

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime
    from uuid import UUID

    from stories.store import Store
    from stories.store.models import Block, Follow, ListedUser, Mute, Position

__all__ = ["Edge", "OwnList", "declare_edge", "user_page_route"]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class OwnList:
    """GET `path`: the caller's own list of the users an edge leads to, most recent first."""

    path: str
    operation_id: str
    endpoint: str
    summary: str
    # components.schemas: the page's.
    schema: str
    # The store's method (looked up as for `Edge.add`): (caller, limit, cursor) -> a page.
    query: Callable[[Store], Callable[[UUID, int, Position | None], Awaitable[list[ListedUser]]]]


@dataclass(frozen=True, slots=True)
class Edge:
    """One kind of edge from the caller to another user (follow, block, mute), declared once: POST `path` adds it
    and DELETE `path` removes it, both idempotent, and `own_list` lists the caller's own. `declare_edge` declares
    its routes and their views."""

    # The add's operation id and endpoint ("un" + verb: the remove's); "you cannot <verb> yourself".
    verb: str
    # `{user_id}` in it: the other user.
    path: str
    summary: str
    remove_summary: str
    description: str
    # components.schemas: the add's answer, whose ids are `ids` (the caller's, the other user's).
    schema: str
    ids: tuple[str, str]
    # The descriptions of the add's 200 and of the remove's 204 (what is true after).
    added: str
    gone: str
    # The log events: `logged` after adding, "un" + `logged` after removing, with the other user's id, and the
    # own list's instant field (`logged` + "_at").
    logged: str
    # The store's method, looked up on the store each time (`lambda store: store.block`): a Store subclass's own
    # method (tests/api/test_effects.py) is the one called.
    add: Callable[[Store], Callable[[UUID, UUID, datetime], Awaitable[Follow | Block | Mute | None]]]
    remove: Callable[[Store], Callable[[UUID, UUID], Awaitable[None]]]
    # A block changes what both users may see; a follow or a mute only what the caller's feed shows.
    both_feeds: bool
    own_list: OwnList | None = None

    def add_route(self) -> Route:
        example = {self.ids[0]: ALICE, self.ids[1]: BOB, "created_at": AT}
        return Route(
            "POST",
            self.path,
            self.verb,
            "social",
            self.summary,
            {"200": json_answer(ref(self.schema), self.added, example)},
            errors=(InvalidRequest,),
            description=self.description,
            parameters=path_id("user_id", "user"),
            table_answer=f"`200` {self.schema.lower()}",
        )

    def remove_route(self) -> Route:
        return Route(
            "DELETE",
            self.path,
            "un" + self.verb,
            "social",
            self.remove_summary,
            {"204": {"description": self.gone}},
            parameters=path_id("user_id", "user"),
            table_answer="`204`",
        )


def declare_edge(blueprint: DeclaredBlueprint, edge: Edge) -> None:
    """Declare the edge's routes on `blueprint`, in the order docs/API.md lists them: add, remove, own list."""

    async def add(user_id: UUID) -> Response:
        me = current_user_id()
        if user_id == me:
            raise InvalidRequest(f"you cannot {edge.verb} yourself")
        app = deps()
        async with after_commit(app) as effects:
            effects.feed_changed(*((me, user_id) if edge.both_feeds else (me,)))
            result = await edge.add(app.store)(me, user_id, to_millis(app.clock.now()))
        if result is None:
            raise NotFound("no such user")
        log.info(edge.logged, **{edge.ids[1]: str(user_id)})
        return json_response(edge_json(result))

    async def remove(user_id: UUID) -> Response:
        me = current_user_id()
        app = deps()
        async with after_commit(app) as effects:
            effects.feed_changed(*((me, user_id) if edge.both_feeds else (me,)))
            await edge.remove(app.store)(me, user_id)
        log.info("un" + edge.logged, **{edge.ids[1]: str(user_id)})
        return Response(b"", 204)

    blueprint.declare(edge.add_route(), endpoint=edge.verb)(add)
    blueprint.declare(edge.remove_route(), endpoint="un" + edge.verb)(remove)
    own = edge.own_list
    if own is None:
        return
    at_field = edge.logged + "_at"

    async def own_list() -> Response:
        limit, cursor = limit_arg(DEFAULT_LIST_LIMIT), cursor_arg()
        rows = await own.query(deps().store)(current_user_id(), limit + 1, cursor)
        return json_response(page_json("users", rows, limit, lambda entry: listed_json(entry, at_field)))

    example = {"users": [{"user_id": BOB, "display_name": "Bob", at_field: AT}], "next_cursor": None}
    route = user_page_route(own.path, own.operation_id, own.summary, own.schema, example)
    blueprint.declare(route, endpoint=own.endpoint)(own_list)


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
